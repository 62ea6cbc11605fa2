/**
 * TLS for the tunnel: TLS 1.3 only, `TLS_CHACHA20_POLY1305_SHA256` by default (fast without
 * AES-NI, constant-time in software; AES-GCM suites are one `ciphers` away). The relay's
 * `tls: auto` creates a self-signed P-256 certificate once, keeps it in `state_dir` (key 0600)
 * and reuses it, so the fingerprint agents pin stays the same across restarts. Agents pin the
 * relay by fingerprint (`sha256:` + hex SHA-256 of the DER certificate, colons and case ignored)
 * or verify it against a CA file.
 */
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import {
  type ConnectionOptions,
  type SecureContextOptions,
  type TLSSocket,
  connect as tlsConnect,
} from 'node:tls';
import { ZiplineError } from '../errors.js';

export const DEFAULT_TUNNEL_CIPHERS = 'TLS_CHACHA20_POLY1305_SHA256';

export interface RelayTls {
  readonly key: string | Buffer;
  readonly cert: string | Buffer;
  readonly ciphers: string;
  /** `sha256:…` of the certificate. */
  readonly fingerprint: string;
  /** Where the certificate lives (auto: the file zipline made). */
  readonly certPath: string;
  readonly created: boolean;
}

export function fingerprintOf(certPem: string | Buffer): string {
  const x = new X509Certificate(certPem);
  return `sha256:${x.fingerprint256.replaceAll(':', '').toLowerCase()}`;
}

/** `sha256:AB:CD…`, `ab cd…`, `AB:CD…` → 64 lower-case hex digits; null if it is not a SHA-256. */
export function normalizeFingerprint(text: string): string | null {
  const hex = text
    .trim()
    .replace(/^sha256:/i, '')
    .replace(/[:\s]/g, '')
    .toLowerCase();
  return /^[0-9a-f]{64}$/.test(hex) ? hex : null;
}

/** The relay's certificate: files as configured, or `auto` (load, else create and store). */
/** A file step of the relay's TLS set-up; its failure is a coded start-up error, not a bug. */
function step<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new ZiplineError('ZL_TLS_CONFIG', `tunnel relay: ${what}: ${code}`, { cause: err });
  }
}

export async function relayTls(
  tls: 'auto' | RelayTlsFiles,
  stateDir: string,
  ciphers: string,
): Promise<RelayTls> {
  if (tls !== 'auto') return relayTlsFromFiles(tls);
  const certPath = join(stateDir, 'relay-cert.pem');
  const keyPath = join(stateDir, 'relay-key.pem');
  if (existsSync(certPath) && existsSync(keyPath)) {
    const cert = step(`cannot read ${certPath}`, () => readFileSync(certPath));
    return {
      key: step(`cannot read ${keyPath}`, () => readFileSync(keyPath)),
      cert,
      ciphers,
      fingerprint: step(`${certPath} is not a PEM certificate`, () => fingerprintOf(cert)),
      certPath,
      created: false,
    };
  }
  const selfsigned = await import('selfsigned');
  const now = new Date();
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'zipline-relay' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(now.getTime() - 3600_000),
    notAfterDate: new Date(now.getTime() + 20 * 365 * 86400_000),
  });
  step(
    `cannot keep its certificate in state_dir ${stateDir} (set tunnel.relay.state_dir to a writable directory)`,
    () => {
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      writeFileSync(keyPath, pems.private, { mode: 0o600 });
      chmodSync(keyPath, 0o600);
      writeFileSync(certPath, pems.cert);
    },
  );
  return {
    key: pems.private,
    cert: pems.cert,
    ciphers,
    fingerprint: fingerprintOf(pems.cert),
    certPath,
    created: true,
  };
}

export interface RelayTlsFiles {
  readonly cert: string;
  readonly key: string;
  readonly ciphers: string;
}

/** `tls: { cert, key }`: read now (at start, and again at each reload to find a renewal). */
export function relayTlsFromFiles(tls: RelayTlsFiles): RelayTls {
  const cert = step(`cannot read the certificate ${tls.cert}`, () => readFileSync(tls.cert));
  return {
    key: step(`cannot read the key ${tls.key}`, () => readFileSync(tls.key)),
    cert,
    ciphers: tls.ciphers,
    fingerprint: step(`${tls.cert} is not a PEM certificate`, () => fingerprintOf(cert)),
    certPath: tls.cert,
    created: false,
  };
}

export function relaySecureOptions(t: RelayTls): SecureContextOptions & { minVersion: 'TLSv1.3' } {
  return { key: t.key, cert: t.cert, ciphers: t.ciphers, minVersion: 'TLSv1.3' };
}

export interface AgentTlsTarget {
  readonly host: string;
  /** Pinned fingerprint (normalized hex) … */
  readonly fingerprint?: string | undefined;
  /** … or a CA bundle to verify against (else the system's CAs). */
  readonly ca?: Buffer | undefined;
  readonly serverName?: string | undefined;
  readonly ciphers?: string | undefined;
}

/**
 * TLS 1.3 over an established transport; resolves once the handshake is done and the relay's
 * certificate is verified (pin or CA). Rejects with ZL_TUNNEL_TLS on any mismatch.
 */
export function connectTls(transport: Duplex, t: AgentTlsTarget, timeoutMs: number): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const serverName = t.serverName ?? (/^[\d.]+$|:/.test(t.host) ? undefined : t.host);
    const opts: ConnectionOptions = {
      socket: transport,
      // the name (or IP) verified against the certificate with `ca` or the system CAs
      host: t.serverName ?? t.host,
      minVersion: 'TLSv1.3',
      ...(serverName !== undefined ? { servername: serverName } : {}),
      ...(t.ciphers !== undefined ? { ciphers: t.ciphers } : {}),
      // a pin replaces chain and name checks (the certificate is self-signed); it is checked below
      ...(t.fingerprint !== undefined
        ? { rejectUnauthorized: false }
        : t.ca !== undefined
          ? { ca: t.ca }
          : {}),
    };
    const sock = tlsConnect(opts);
    const timer = setTimeout(
      () => fail(new ZiplineError('ZL_TUNNEL_TLS', `TLS handshake took over ${timeoutMs} ms`)),
      timeoutMs,
    );
    const fail = (err: Error): void => {
      clearTimeout(timer);
      sock.destroy();
      transport.destroy();
      reject(err);
    };
    sock.once('error', (err) =>
      fail(err instanceof ZiplineError ? err : new ZiplineError('ZL_TUNNEL_TLS', `TLS: ${err.message}`)),
    );
    sock.once('secureConnect', () => {
      if (t.fingerprint !== undefined) {
        const raw = sock.getPeerCertificate().raw;
        const got = raw === undefined ? '' : fingerprintOf(raw).slice(7);
        if (got !== t.fingerprint) {
          fail(
            new ZiplineError(
              'ZL_TUNNEL_TLS',
              `the relay's certificate sha256:${got} does not match the pinned fingerprint`,
            ),
          );
          return;
        }
      }
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolve(sock);
    });
  });
}
