/**
 * Heads between zipline's HTTP/1.1 forms and an HTTP/2 upstream's header lists (RFC 9113 §8.2,
 * §8.3). The request's fields come from the forwarded head (forward-head.ts), so hop-by-hop
 * removal, `X-Forwarded-*`, `X-Request-Id` and the route's rules are the same as for HTTP/1.1
 * upstreams; `Host` becomes `:authority`, and `te: trailers` says zipline takes trailers. The
 * response's header list becomes an HTTP/1.1 head for the same strict parser and the same client
 * code: one with a field name or value HTTP/1.1 could not carry is a bad response (502).
 */
import { STATUS_CODES } from 'node:http';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import { ZiplineError } from '../../errors.js';
import { CONNECTION_SPECIFIC } from '../http2-module.js';
import { LAST_CHUNK } from '../parser/chunked.js';
import { parseResponseHead, type ResponseHead } from '../parser/response-head.js';

/** Connection-specific fields and framing HTTP/2 does itself; `Host` becomes `:authority`. */
const DROP = new Set([...CONNECTION_SPECIFIC, 'trailer', 'host']);
/** Fields a trailer section must not carry (RFC 9110 §6.5.1): framing, routing, and the like. */
const NOT_TRAILERS = new Set([...DROP, 'content-length', 'content-type', 'content-encoding', 'set-cookie']);
const NAME_RE = /^[!#$%&'*+.^_`|~0-9a-z-]+$/;
const VALUE_RE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * The request's header list: pseudo-fields, then the forwarded head's fields (`text`, an
 * HTTP/1.1 head ending with its blank line) in their order. A repeated field is one, its values
 * joined with ", " (RFC 9110 §5.3; Node refuses repeats of If-None-Match, Authorization and the
 * other fields it takes as single-valued), except Cookie, whose crumbs HTTP/2 sends apart
 * (RFC 9113 §8.2.3).
 */
export function requestHeaders(
  text: string,
  method: string,
  path: string,
  https: boolean,
): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {
    ':method': method,
    ':scheme': https ? 'https' : 'http',
    ':path': path,
  };
  let at = text.indexOf('\r\n') + 2;
  for (;;) {
    const end = text.indexOf('\r\n', at);
    if (end <= at) break;
    const colon = text.indexOf(':', at);
    const name = text.slice(at, colon).toLowerCase();
    const value = text.slice(colon + 1, end).trim();
    at = end + 2;
    if (name === 'host') headers[':authority'] = value;
    if (DROP.has(name)) continue;
    add(headers, name, value);
  }
  headers.te = 'trailers';
  return headers;
}

/**
 * The response's header list as an HTTP/1.1 head, parsed. `ended`: the stream ended with it (no
 * body); a body without `content-length` is declared chunked (an HTTP/1.1 client gets it so).
 */
export function responseHead(h: IncomingHttpHeaders, method: string, ended: boolean): ResponseHead {
  const status = Number(h[':status']);
  if (!Number.isInteger(status) || status < 200 || status > 599) {
    throw new ZiplineError('ZL_UPSTREAM_BAD_RESPONSE', `HTTP/2 upstream: status ${String(h[':status'])}`);
  }
  let text = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
  let length = false;
  for (const name of Object.keys(h)) {
    if (name.startsWith(':') || DROP.has(name)) continue;
    if (name === 'content-length') length = true;
    const value = h[name];
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v === undefined) continue;
      text += `${checked(name, String(v))}\r\n`;
    }
  }
  const bodiless = method === 'HEAD' || status === 204 || status === 304;
  if (!bodiless && !length) text += ended ? 'content-length: 0\r\n' : 'transfer-encoding: chunked\r\n';
  const buf = Buffer.from(`${text}\r\n`, 'latin1');
  return parseResponseHead(buf, buf.length, method);
}

/** Trailer fields to pass on: well-formed, and none that framing or routing depends on. */
export function trailerFields(t: IncomingHttpHeaders): OutgoingHttpHeaders | null {
  let out: OutgoingHttpHeaders | null = null;
  for (const name of Object.keys(t)) {
    const value = t[name];
    if (name.startsWith(':') || NOT_TRAILERS.has(name) || !NAME_RE.test(name) || value === undefined)
      continue;
    if ((Array.isArray(value) ? value : [value]).some((v) => !VALUE_RE.test(v))) continue;
    out ??= {};
    out[name] = value;
  }
  return out;
}

/** The last chunk of a chunked body for an HTTP/1.1 client, with `trailers` (from `trailerFields`). */
export function lastChunk(trailers: OutgoingHttpHeaders | null): Buffer {
  if (trailers === null) return LAST_CHUNK;
  let text = '0\r\n';
  for (const name of Object.keys(trailers)) {
    const value = trailers[name] as string | string[];
    for (const v of Array.isArray(value) ? value : [value]) text += `${name}: ${v}\r\n`;
  }
  return Buffer.from(`${text}\r\n`, 'latin1');
}

function checked(name: string, value: string): string {
  if (!NAME_RE.test(name) || !VALUE_RE.test(value)) {
    throw new ZiplineError(
      'ZL_UPSTREAM_BAD_RESPONSE',
      `HTTP/2 upstream: invalid field ${JSON.stringify(name)}`,
    );
  }
  return `${name}: ${value}`;
}

function add(headers: OutgoingHttpHeaders, name: string, value: string): void {
  const prev = headers[name];
  if (prev === undefined) headers[name] = value;
  else if (Array.isArray(prev)) prev.push(value);
  else headers[name] = name === 'cookie' ? [String(prev), value] : `${String(prev)}, ${value}`;
}
