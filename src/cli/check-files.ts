/**
 * `zipline check` loads the files a config names for TLS as `run` would (nginx -t reads its
 * certificates too): an https listener's certificates and keys and an upstream's CA, CRL and
 * client certificate are parsed by the same code that serves them; the tunnel's relay
 * certificate and its agents' CA files are read. A config that validates but names a file that
 * is missing or unusable would otherwise pass `check` and fail `run` with exit 3.
 */
import { readFileSync } from 'node:fs';
import type { ValidConfig } from '../config/schema.js';
import { listenerName } from '../config/valid.js';
import { TlsState } from '../http/tls.js';
import { OriginTls } from '../upstream/origin-tls.js';

/** One line per file that cannot be used: `where: why`. */
export function tlsFileProblems(c: ValidConfig): string[] {
  const out: string[] = [];
  const attempt = (where: string, load: () => unknown): void => {
    try {
      load();
    } catch (err) {
      out.push(`${where}: ${(err as Error).message}`);
    }
  };
  const readable = (path: string) => (): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  };
  c.listeners.forEach((l, i) => {
    const tls = l.protocol === 'https' ? l.tls : undefined;
    if (tls !== undefined) attempt(`listeners[${i}] (${listenerName(l)}).tls`, () => new TlsState(tls));
  });
  for (const [name, u] of Object.entries(c.upstreams)) {
    const tls = u.tls;
    if (tls !== undefined) attempt(`upstreams.${name}.tls`, () => new OriginTls(name, tls));
  }
  const relayTls = c.tunnel?.relay?.tls;
  if (typeof relayTls === 'object') {
    attempt('tunnel.relay.tls.cert', readable(relayTls.cert));
    attempt('tunnel.relay.tls.key', readable(relayTls.key));
  }
  c.tunnel?.agent?.relays.forEach((r, i) => {
    if (r.ca !== undefined) attempt(`tunnel.agent.relays[${i}].ca`, readable(r.ca));
  });
  return out;
}
