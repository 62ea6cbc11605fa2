/**
 * The request head zipline sends upstream, built from the client's parsed head (RFC 9110 §7.6):
 *
 * - hop-by-hop fields are dropped: Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
 *   Transfer-Encoding, Upgrade, Proxy-Authorization, and every field the Connection header names;
 *   framing is re-declared (Content-Length or `Transfer-Encoding: chunked`) and, for an upgrade,
 *   `Connection: upgrade` + `Upgrade`;
 * - `Host` is preserved, field order, name case and repeated fields (Cookie…) are kept;
 * - `X-Forwarded-For` / `-Proto` / `-Host` and `X-Real-IP`: kept (XFF appended to) only when the
 *   client address is in `trusted_proxies`; otherwise replaced with what zipline saw;
 * - `X-Request-Id`: a well-formed incoming id (1–200 visible characters) is propagated, else one
 *   is generated;
 * - the route's header rules: `remove` then `set` (set replaces every field of that name);
 * - `Expect: 100-continue` is answered by zipline (once an upstream connection is ready) and not
 *   forwarded, as nginx does; this keeps the request retryable.
 */
import type { BlockList } from 'node:net';
import type { RequestHead } from './parser/request-head.js';
import { lowerAscii } from './parser/tokens.js';
import { nextRequestId } from './request-id.js';

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  // framing, re-declared below from the parsed head
  'content-length',
]);
const FORWARDING = new Set([
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-real-ip',
  'x-request-id',
]);
const REQUEST_ID_RE = /^[\x21-\x7e]{1,200}$/;

export interface HeaderRules {
  /** Lower-case names to drop. */
  readonly remove: ReadonlySet<string>;
  /** Fields to set, replacing any of the same name (names as written in config). */
  readonly set: ReadonlyMap<string, string>;
}

export interface ForwardContext {
  readonly clientIp: string;
  readonly proto: 'http' | 'https';
  /** The client is in `trusted_proxies` (decide once per connection: `isTrustedProxy`). */
  readonly trusted: boolean;
  /** The path to send (after `strip_prefix`), query included. */
  readonly path: string;
  readonly rules: HeaderRules;
}

export interface ForwardedHead {
  /** The request head for the upstream, ending with the blank line. */
  readonly head: string;
  /** The request id used (propagated or generated), for logs and the response. */
  readonly requestId: string;
}

export function buildForwardHead(req: RequestHead, ctx: ForwardContext): ForwardedHead {
  const trusted = ctx.trusted;
  const named = connectionNamed(req);
  let out = `${req.method} ${ctx.path} HTTP/1.1\r\n`;
  let xff: string | null = null;
  let xfProto: string | null = null;
  let xfHost: string | null = null;
  let realIp: string | null = null;
  let requestId: string | null = null;
  for (let f = 0; f < req.fieldCount; f++) {
    const k = f * 4;
    const nameStart = req.fields[k] as number;
    const nameEnd = req.fields[k + 1] as number;
    const lower = lowerAscii(req.raw, nameStart, nameEnd);
    const value = req.raw.toString('latin1', req.fields[k + 2] as number, req.fields[k + 3] as number);
    if (FORWARDING.has(lower)) {
      if (lower === 'x-request-id') requestId ??= REQUEST_ID_RE.test(value) ? value : null;
      else if (trusted) {
        if (lower === 'x-forwarded-for') xff = xff === null ? value : `${xff}, ${value}`;
        else if (lower === 'x-forwarded-proto') xfProto ??= value;
        else if (lower === 'x-forwarded-host') xfHost ??= value;
        else realIp ??= value;
      }
      continue;
    }
    if (lower === 'expect' && req.expectContinue) continue; // zipline answers 100-continue itself
    if (HOP_BY_HOP.has(lower) || named.has(lower) || ctx.rules.remove.has(lower) || hasSet(ctx.rules, lower))
      continue;
    out += `${req.raw.toString('latin1', nameStart, nameEnd)}: ${value}\r\n`;
  }
  const id = requestId ?? nextRequestId();
  out += `X-Forwarded-For: ${xff === null ? ctx.clientIp : `${xff}, ${ctx.clientIp}`}\r\n`;
  out += `X-Forwarded-Proto: ${xfProto ?? ctx.proto}\r\n`;
  out += `X-Forwarded-Host: ${xfHost ?? req.host ?? ''}\r\n`;
  out += `X-Real-IP: ${realIp ?? ctx.clientIp}\r\n`;
  out += `X-Request-Id: ${id}\r\n`;
  for (const [name, value] of ctx.rules.set) out += `${name}: ${value}\r\n`;
  if (req.chunked) out += 'Transfer-Encoding: chunked\r\n';
  else if (req.contentLength >= 0) out += `Content-Length: ${req.contentLength}\r\n`;
  if (req.upgrade !== null) out += `Connection: upgrade\r\nUpgrade: ${req.upgrade}\r\n`;
  return { head: `${out}\r\n`, requestId: id };
}

/**
 * Whether a client's forwarding headers are believed. Once per connection: `BlockList.check`
 * builds a SocketAddress per call. It matches IPv4-mapped IPv6 (`::ffff:10.1.2.3`) against IPv4
 * rules too.
 */
export function isTrustedProxy(list: BlockList, ip: string): boolean {
  return list.check(ip, ip.includes(':') ? 'ipv6' : 'ipv4');
}

/** Lower-case names listed in the Connection header(s): hop-by-hop for this message. */
function connectionNamed(req: RequestHead): Set<string> {
  const names = new Set<string>();
  for (let f = 0; f < req.fieldCount; f++) {
    const k = f * 4;
    if (lowerAscii(req.raw, req.fields[k] as number, req.fields[k + 1] as number) !== 'connection') continue;
    const value = req.raw.toString('latin1', req.fields[k + 2] as number, req.fields[k + 3] as number);
    for (const token of value.split(',')) {
      const t = token.trim().toLowerCase();
      if (t !== '') names.add(t);
    }
  }
  return names;
}

function hasSet(rules: HeaderRules, lower: string): boolean {
  for (const name of rules.set.keys()) if (name.toLowerCase() === lower) return true;
  return false;
}
