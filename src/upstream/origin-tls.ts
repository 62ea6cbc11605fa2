/**
 * TLS from the proxy to an upstream's servers (`upstreams.*.tls`, nginx `proxy_pass https://`,
 * Caddy `transport http { tls }`): one client context per config generation (files read here,
 * never logged), the name each server's certificate is checked against, and the last TLS session
 * per server address, so that a new pooled connection resumes instead of a full handshake.
 */
import { isIP } from 'node:net';
import {
  type ConnectionOptions,
  checkServerIdentity,
  createSecureContext,
  type PeerCertificate,
  type SecureContext,
} from 'node:tls';
import { NamedFiles, readTlsFile } from '../config/named-files.js';
import type { UpstreamConfig } from '../config/schema.js';
import { parseHostPort } from '../config/units.js';
import { ZiplineError } from '../errors.js';
import type { Endpoint } from './endpoint.js';

type OriginTlsConfig = NonNullable<UpstreamConfig['tls']>;

/** Sessions kept per upstream (one per server address). */
const MAX_SESSIONS = 1024;

function read(upstream: string, path: string, what: string): Buffer {
  return readTlsFile(path, `upstream ${upstream}: cannot read TLS ${what} ${path}`);
}

export class OriginTls {
  readonly verify: boolean;
  private readonly context: SecureContext;
  private readonly serverName: string | undefined;
  private readonly sessions = new Map<string, Buffer>();
  private readonly files: NamedFiles;

  constructor(upstream: string, cfg: OriginTlsConfig) {
    this.verify = cfg.verify;
    this.serverName = cfg.server_name;
    const files = new NamedFiles((path, what) => read(upstream, path, what));
    this.files = files;
    try {
      this.context = createSecureContext({
        minVersion: cfg.min_version,
        ...(cfg.ca !== undefined ? { ca: files.take(cfg.ca, 'CA file') } : {}),
        ...(cfg.crl !== undefined ? { crl: files.take(cfg.crl, 'CRL file') } : {}),
        ...(cfg.cert !== undefined && cfg.key !== undefined
          ? { cert: files.take(cfg.cert, 'certificate'), key: files.take(cfg.key, 'key') }
          : {}),
      });
    } catch (err) {
      if (err instanceof ZiplineError) throw err;
      throw new ZiplineError('ZL_TLS_CONFIG', `upstream ${upstream}: tls: ${(err as Error).message}`);
    }
  }

  /**
   * A file it was made from was renewed in place (a reload then rebuilds it); throws
   * ZL_TLS_CONFIG when one cannot be read.
   */
  filesChanged(): boolean {
    return this.files.changed();
  }

  /**
   * The name a server's certificate must carry and the SNI sent: `server_name`, else the
   * server's host when it is a name; undefined for an IP address (no SNI; the certificate must
   * name the IP).
   */
  nameOf(e: Endpoint): string | undefined {
    if (this.serverName !== undefined) return this.serverName;
    const host = parseHostPort(e.server)?.host;
    return host === undefined || isIP(host) !== 0 ? undefined : host;
  }

  /** `tls.connect` options for a new connection to `e` (its address already resolved). */
  connectOptions(e: Endpoint): ConnectionOptions {
    const name = this.nameOf(e);
    return {
      host: e.ip,
      port: e.port,
      secureContext: this.context,
      servername: name,
      rejectUnauthorized: this.verify,
      checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(name ?? e.ip, cert),
      ALPNProtocols: ['http/1.1'],
      session: this.sessions.get(e.address),
    };
  }

  /** A session ticket the server sent on a connection to `e`: the next connection resumes it. */
  remember(e: Endpoint, session: Buffer): void {
    if (this.sessions.size >= MAX_SESSIONS && !this.sessions.has(e.address)) this.sessions.clear();
    this.sessions.set(e.address, session);
  }
}
