/**
 * The request head zipline sends upstream, built from the client's parsed head (RFC 9110 §7.6):
 *
 * - hop-by-hop fields are dropped: Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
 *   Transfer-Encoding, Upgrade, Proxy-Authorization, and every field the Connection header names;
 *   framing is re-declared (Content-Length or `Transfer-Encoding: chunked`) and, for an upgrade,
 *   `Connection: upgrade` + `Upgrade`;
 * - `Host` is preserved (an absolute-form target's authority replaces it; an HTTP/1.0 request
 *   without one gets the server's `host:port`); field order, name case and repeated fields
 *   (Cookie…) are kept;
 * - `X-Forwarded-For` / `-Proto` / `-Host` and `X-Real-IP`: kept (XFF appended to) only when the
 *   client address is in `trusted_proxies`; otherwise replaced with what zipline saw;
 * - `X-Request-Id`: a well-formed incoming id (1–200 visible characters) is propagated, else one
 *   is generated;
 * - the route's header rules: `remove` then `set` (set replaces every field of that name);
 * - `Expect: 100-continue` is answered by zipline (once an upstream connection is ready) and not
 *   forwarded, as nginx does; this keeps the request retryable.
 */
import { connectionOptions } from './parser/connection-options.js';
import { F, fieldName } from './parser/names.js';
import type { RequestHead } from './parser/request-head.js';
import { latin1, lowerAscii } from './parser/tokens.js';
import { nextRequestId } from './request-id.js';

const REQUEST_ID_RE = /^[\x21-\x7e]{1,200}$/;

export interface HeaderRules {
  /** Lower-case names to drop. */
  readonly remove: ReadonlySet<string>;
  /** Fields to set, replacing any of the same name (names as written in config). */
  readonly set: ReadonlyMap<string, string>;
  /** The names of `set`, lower case. */
  readonly setNames: ReadonlySet<string>;
}

export interface ForwardContext {
  readonly clientIp: string;
  /** The request's client (`real_ip_header`), for `X-Real-IP`; `clientIp` when not set. */
  readonly realIp: string;
  readonly proto: 'http' | 'https';
  /** The client is in `trusted_proxies` (decided once per connection). */
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
  /** The request named no host (HTTP/1.0): each attempt adds its server's (`headFor`). */
  readonly hostless: boolean;
}

export function buildForwardHead(req: RequestHead, ctx: ForwardContext): ForwardedHead {
  const trusted = ctx.trusted;
  const raw = req.raw;
  const fields = req.fields;
  const named = connectionNamed(req);
  const rules = ctx.rules;
  const byName = named !== null || rules.remove.size > 0 || rules.setNames.size > 0;
  let out = `${req.method} ${ctx.path} HTTP/1.1\r\n`;
  let xff: string | null = null;
  let xfProto: string | null = null;
  let xfHost: string | null = null;
  let realIp: string | null = null;
  let requestId: string | null = null;
  // kept field lines are copied as they came, consecutive ones in one slice
  let run = -1;
  for (let f = 0; f < req.fieldCount; f++) {
    const k = f * 4;
    const nameStart = fields[k] as number;
    const nameEnd = fields[k + 1] as number;
    const id = fieldName(raw, nameStart, nameEnd);
    let keep = true;
    switch (id) {
      case F.CONTENT_LENGTH:
      case F.TRANSFER_ENCODING:
      case F.CONNECTION:
      case F.KEEP_ALIVE:
      case F.PROXY_CONNECTION:
      case F.TE:
      case F.TRAILER:
      case F.UPGRADE:
      case F.PROXY_AUTHORIZATION:
        keep = false; // hop-by-hop, or framing that is re-declared below
        break;
      case F.X_REQUEST_ID: {
        const value = latin1(raw, fields[k + 2] as number, fields[k + 3] as number);
        requestId ??= REQUEST_ID_RE.test(value) ? value : null;
        keep = false;
        break;
      }
      case F.X_FORWARDED_FOR:
      case F.X_FORWARDED_PROTO:
      case F.X_FORWARDED_HOST:
      case F.X_REAL_IP:
        keep = false;
        if (trusted) {
          const value = latin1(raw, fields[k + 2] as number, fields[k + 3] as number);
          if (id === F.X_FORWARDED_FOR) xff = xff === null ? value : `${xff}, ${value}`;
          else if (id === F.X_FORWARDED_PROTO) xfProto ??= value;
          else if (id === F.X_FORWARDED_HOST) xfHost ??= value;
          else realIp ??= value;
        }
        break;
      case F.EXPECT:
        keep = !req.expectContinue; // zipline answers 100-continue itself
        break;
      case F.HOST:
        keep = !req.absoluteForm; // the target's authority stands for it (RFC 9112 §3.2.2)
        break;
      default:
        break; // end-to-end: every other field, named (User-Agent, Referer…) or not, is forwarded
    }
    if (keep && byName) {
      const lower = lowerAscii(raw, nameStart, nameEnd);
      keep = !(named?.has(lower) || rules.remove.has(lower) || rules.setNames.has(lower));
    }
    if (keep) {
      if (run < 0) run = nameStart;
    } else if (run >= 0) {
      out += latin1(raw, run, nameStart);
      run = -1;
    }
  }
  if (run >= 0) out += `${latin1(raw, run, req.headEnd - 2)}`;
  const id = requestId ?? nextRequestId();
  if (req.absoluteForm) out += `Host: ${req.host}\r\n`;
  out += `X-Forwarded-For: ${xff === null ? ctx.clientIp : `${xff}, ${ctx.clientIp}`}\r\n`;
  out += `X-Forwarded-Proto: ${xfProto ?? ctx.proto}\r\n`;
  const forwardedHost = xfHost ?? req.host;
  if (forwardedHost !== null) out += `X-Forwarded-Host: ${forwardedHost}\r\n`;
  out += `X-Real-IP: ${realIp ?? ctx.realIp}\r\n`;
  out += `X-Request-Id: ${id}\r\n`;
  for (const [name, value] of rules.set) out += `${name}: ${value}\r\n`;
  if (req.chunked) out += 'Transfer-Encoding: chunked\r\n';
  else if (req.contentLength >= 0) out += `Content-Length: ${req.contentLength}\r\n`;
  if (req.upgrade !== null) out += `Connection: upgrade\r\nUpgrade: ${req.upgrade}\r\n`;
  return { head: `${out}\r\n`, requestId: id, hostless: req.host === null };
}

/**
 * The head an attempt on `server` sends. For an HTTP/1.0 request that named no host, `Host:` the
 * server as configured (`host:port`), as nginx (`$proxy_host`) and Caddy send: an HTTP/1.1
 * request upstream must carry one.
 */
export function headFor(fwd: ForwardedHead, server: string | undefined): string {
  if (!fwd.hostless || server === undefined) return fwd.head;
  const line = fwd.head.indexOf('\r\n') + 2;
  return `${fwd.head.slice(0, line)}Host: ${server}\r\n${fwd.head.slice(line)}`;
}

/** The field names the request's Connection header(s) list as options (see connection-options.ts). */
function connectionNamed(req: RequestHead): Set<string> | null {
  let names: Set<string> | null = null;
  for (let f = 0; f < req.fieldCount; f++) {
    const k = f * 4;
    if (fieldName(req.raw, req.fields[k] as number, req.fields[k + 1] as number) !== F.CONNECTION) continue;
    names = connectionOptions(
      latin1(req.raw, req.fields[k + 2] as number, req.fields[k + 3] as number),
      names,
    );
  }
  return names;
}
