/**
 * `listeners[].real_ip_header`: who the client of a request is when it came through an HTTP load
 * balancer or CDN in `trusted_proxies` (nginx `real_ip_header` + `set_real_ip_from` +
 * `real_ip_recursive on`; Envoy's trusted XFF hops). Without it, and for every request from a
 * peer not in `trusted_proxies`, the client is the connection's address (the PROXY protocol
 * header's, if one was read).
 *
 * `x-forwarded-for`: the fields' addresses are read right to left (every `X-Forwarded-For` field,
 * in order, as one list); trusted proxies are skipped and the first address that is not one is
 * the client. An entry that is not an IP address stops the walk: the last address before it
 * stands (a client cannot smuggle a name or junk in). All trusted: the leftmost.
 * `x-real-ip`: its value, when it is an IP address.
 */
import { type BlockList, isIP } from 'node:net';
import { isLoopback } from '../admin/auth.js';
import { listed } from '../config/address-list.js';
import { F, fieldName } from './parser/names.js';
import type { RequestHead } from './parser/request-head.js';
import { latin1 } from './parser/tokens.js';

export type RealIpHeader = 'x-forwarded-for' | 'x-real-ip';

/**
 * `real_ip_header` believed from every address (`trusted_proxies` with a `/0` block) on a listener
 * reachable beyond this host, so that every client can name its own address and take another's rate
 * limit or pass a `clients` list. Said by `run` (a warning) and `check`.
 */
export function realIpWarning(
  listenHost: string,
  trustedProxies: readonly string[],
  header: string | undefined,
): string | null {
  if (header === undefined || isLoopback(listenHost) || listenHost === 'localhost') return null;
  if (!trustedProxies.some((p) => p.trim().endsWith('/0'))) return null;
  return 'real_ip_header is believed from every address (trusted_proxies has a /0 block), so every client can name its own address for the access log, rate_limit and clients lists; list the balancers instead';
}

export function requestClientIp(
  header: RealIpHeader | null,
  trusted: BlockList,
  head: RequestHead,
  down: { readonly clientIp: string; readonly trusted: boolean },
): string {
  if (header === null || !down.trusted) return down.clientIp;
  const value = fieldValues(head, header);
  if (value === null) return down.clientIp;
  if (header === 'x-real-ip') {
    const v = value.trim();
    return isIP(v) !== 0 ? v : down.clientIp;
  }
  const hops = value.split(',');
  let client = down.clientIp;
  for (let i = hops.length - 1; i >= 0; i--) {
    const a = (hops[i] as string).trim();
    if (isIP(a) === 0) break;
    client = a;
    if (!listed(trusted, a)) break;
  }
  return client;
}

/** Every field called `name` (lower case), joined with `,` in order; null when none. */
function fieldValues(head: RequestHead, header: RealIpHeader): string | null {
  // recognised from the name's bytes (parser/names.ts): no lower-cased string per field
  const id = header === 'x-forwarded-for' ? F.X_FORWARDED_FOR : F.X_REAL_IP;
  let out: string | null = null;
  for (let f = 0; f < head.fieldCount; f++) {
    const k = f * 4;
    if (fieldName(head.raw, head.fields[k] as number, head.fields[k + 1] as number) !== id) continue;
    const v = latin1(head.raw, head.fields[k + 2] as number, head.fields[k + 3] as number);
    out = out === null ? v : `${out},${v}`;
  }
  return out;
}
