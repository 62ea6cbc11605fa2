/**
 * TLS termination settings of an https listener: certificates read from files (never logged),
 * one default and any number more chosen by SNI from each certificate's DNS names (exact names
 * first, then the wildcard of the parent domain, as nginx `server_name`), TLS 1.2+ (1.3 always
 * offered; TLS 1.2 suites from `tls.ciphers`, forward-secret AEAD by default; no renegotiation),
 * ALPN `h2` / `http/1.1`.
 */

import { constants, X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext, type TlsOptions } from 'node:tls';
import { NamedFiles, readTlsFile } from '../config/named-files.js';
import type { HttpListenerConfig } from '../config/schema.js';
import { ZiplineError } from '../errors.js';

type TlsConfig = NonNullable<HttpListenerConfig['tls']>;

/**
 * No TLS 1.2 renegotiation, as nginx and HAProxy: a client asking for one gets OpenSSL's
 * `no_renegotiation` alert and the connection goes on (Node would otherwise allow three per ten
 * minutes: a full handshake's CPU each, the DoS scanners flag).
 */
const SECURE_OPTIONS = constants.SSL_OP_NO_RENEGOTIATION;

interface Loaded {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly names: string[];
}

function read(path: string, what: string): Buffer {
  return readTlsFile(path, `cannot read TLS ${what} ${path}`);
}

function load(files: NamedFiles, certPath: string, keyPath: string): Loaded {
  const cert = files.take(certPath, 'certificate');
  const key = files.take(keyPath, 'key');
  let names: string[] = [];
  try {
    const x509 = new X509Certificate(cert);
    names = (x509.subjectAltName ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.startsWith('DNS:'))
      .map((s) => s.slice(4).toLowerCase());
    const cn = /CN=([^\n,]+)/.exec(x509.subject)?.[1];
    if (names.length === 0 && cn !== undefined) names = [cn.toLowerCase()];
  } catch (err) {
    throw new ZiplineError(
      'ZL_TLS_CONFIG',
      `${certPath} is not a PEM certificate: ${(err as Error).message}`,
    );
  }
  return { cert, key, names };
}

function context(l: Loaded, cfg: TlsConfig, where: string): SecureContext {
  try {
    return createSecureContext({
      cert: l.cert,
      key: l.key,
      minVersion: cfg.min_version,
      ciphers: cfg.ciphers,
      secureOptions: SECURE_OPTIONS,
    });
  } catch (err) {
    throw new ZiplineError('ZL_TLS_CONFIG', `${where}: ${(err as Error).message}`);
  }
}

interface Contexts {
  readonly exact: Map<string, SecureContext>;
  readonly wildcard: Map<string, SecureContext>;
  readonly first: Loaded;
  /** What they were made from, as read. */
  readonly files: NamedFiles;
}

function build(cfg: TlsConfig): Contexts {
  const pairs = [
    ...(cfg.cert !== undefined && cfg.key !== undefined ? [{ cert: cfg.cert, key: cfg.key }] : []),
    ...cfg.certificates,
  ];
  const files = new NamedFiles(read);
  const loaded = pairs.map((p) => ({ ...load(files, p.cert, p.key), where: p.cert }));
  const first = loaded[0];
  if (first === undefined) throw new ZiplineError('ZL_TLS_CONFIG', 'no certificate configured');
  const exact = new Map<string, SecureContext>();
  const wildcard = new Map<string, SecureContext>();
  for (const l of loaded) {
    const ctx = context(l, cfg, l.where);
    for (const name of l.names) {
      const map = name.startsWith('*.') ? wildcard : exact;
      const key = name.startsWith('*.') ? name.slice(2) : name;
      if (!map.has(key)) map.set(key, ctx);
    }
  }
  return { exact, wildcard, first, files };
}

/**
 * The TLS state of one https listener: server options for `tls.createServer`, and `reload()`
 * for a config reload (new certificates serve new handshakes; a bad file throws `ZL_TLS_CONFIG`
 * and changes nothing).
 */
export class TlsState {
  private contexts: Contexts;

  constructor(cfg: TlsConfig) {
    this.contexts = build(cfg);
  }

  options(cfg: TlsConfig, handshakeTimeoutMs: number): TlsOptions {
    const first = this.contexts.first;
    return {
      cert: first.cert,
      key: first.key,
      minVersion: cfg.min_version,
      ciphers: cfg.ciphers,
      secureOptions: SECURE_OPTIONS,
      ALPNProtocols: [...cfg.alpn],
      handshakeTimeout: handshakeTimeoutMs,
      SNICallback: (servername, cb) => {
        const { exact, wildcard } = this.contexts;
        const name = servername.toLowerCase();
        const dot = name.indexOf('.');
        cb(null, exact.get(name) ?? (dot > 0 ? wildcard.get(name.slice(dot + 1)) : undefined));
      },
    };
  }

  /**
   * A certificate or key file was renewed in place since it was read (certbot writes the same
   * paths): a reload with the same config then loads it. Throws ZL_TLS_CONFIG when one cannot be
   * read.
   */
  filesChanged(): boolean {
    return this.contexts.files.changed();
  }

  /** Loads `cfg`'s certificates; returns the default context's options for `setSecureContext`. */
  reload(cfg: TlsConfig): TlsOptions {
    const next = build(cfg);
    this.contexts = next;
    return {
      cert: next.first.cert,
      key: next.first.key,
      minVersion: cfg.min_version,
      ciphers: cfg.ciphers,
      secureOptions: SECURE_OPTIONS,
    };
  }
}
