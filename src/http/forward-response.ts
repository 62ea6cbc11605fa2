/**
 * The response head zipline sends the client, built from the upstream's parsed head (RFC 9110
 * §7.6.1, RFC 9112 §6): hop-by-hop fields (and those the upstream's Connection names) dropped,
 * name case, order and repeated fields (`Set-Cookie`) kept, framing re-declared for the client,
 * the route's response rules applied (`remove`, then `set`).
 */

import type { HeaderRules } from './forward-head.js';
import { connectionOptions } from './parser/connection-options.js';
import { F, type FieldId, fieldName } from './parser/names.js';
import type { ResponseHead } from './parser/response-head.js';
import { latin1, lowerAscii } from './parser/tokens.js';

/** How the body reaches the client. */
export type ClientFraming =
  /** as the upstream framed it (Content-Length, or chunked passed through to an HTTP/1.1 client) */
  | 'same'
  /** no framing: the body ends when zipline closes the connection (HTTP/1.0 client, close-delimited) */
  | 'close';

/** Hop-by-hop field ids, as a table indexed by `FieldId` (one array read per field). */
const HOP_BY_HOP_IDS = new Uint8Array(32);
for (const id of [
  F.CONNECTION,
  F.KEEP_ALIVE,
  F.PROXY_CONNECTION,
  F.TE,
  F.TRANSFER_ENCODING,
  F.UPGRADE,
  F.PROXY_AUTHENTICATE,
] as FieldId[])
  HOP_BY_HOP_IDS[id] = 1;

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'upgrade',
  'proxy-authenticate',
]);

export interface ClientHeadOptions {
  readonly framing: ClientFraming;
  /** The client connection stays open after this response. */
  readonly keepAlive: boolean;
  /** The client speaks HTTP/1.0 (keep-alive must then be announced). */
  readonly clientMinor: 0 | 1;
  readonly rules: HeaderRules;
}

export function buildClientHead(resp: ResponseHead, opts: ClientHeadOptions): string {
  const raw = resp.raw;
  const fields = resp.fields;
  const count = resp.fieldCount;
  const named = resp.connection === '' ? null : connectionNamed(resp);
  // an HTTP/1.1 status line with a reason is copied with the lines after it (one run)
  const sameLine = resp.minor === 1 && resp.statusLineEnd > 13;
  let out = sameLine ? '' : `HTTP/1.1 ${resp.status} ${resp.reason}\r\n`;
  const rules = opts.rules;
  const hasRules = rules.remove.size > 0 || rules.set.size > 0;
  // a 204 has no body whatever its fields say (RFC 9112 §6.3) and MUST NOT declare one
  // (RFC 9110 §8.6): an upstream's Content-Length is dropped, as nginx does
  const noLength = resp.status === 204;
  // kept lines are copied as runs of consecutive lines (CRLFs included): one string per run, not
  // one per field; a line starts where the previous one's CRLF ends
  let run = sameLine ? 0 : -1;
  for (let f = 0; f < count; f++) {
    const k = f * 4;
    const ns = fields[k] as number;
    const ne = fields[k + 1] as number;
    const id = fieldName(raw, ns, ne);
    let keep = HOP_BY_HOP_IDS[id] !== 1 && !(noLength && id === F.CONTENT_LENGTH);
    if (keep && (named !== null || hasRules)) {
      const lower = lowerAscii(raw, ns, ne);
      keep = !(named?.has(lower) || rules.remove.has(lower) || rules.setNames.has(lower));
    }
    if (keep) {
      if (run < 0) run = ns;
    } else if (run >= 0) {
      out += latin1(raw, run, ns);
      run = -1;
    }
  }
  if (run >= 0) out += latin1(raw, run, resp.headEnd - 2);
  for (const [name, value] of rules.set) out += `${name}: ${value}\r\n`;
  if (resp.body === 'chunked' && opts.framing === 'same') out += 'Transfer-Encoding: chunked\r\n';
  if (!opts.keepAlive) out += 'Connection: close\r\n';
  else if (opts.clientMinor === 0) out += 'Connection: keep-alive\r\n';
  return `${out}\r\n`;
}

/** Interim (1xx, not 101) heads are passed as they came, minus hop-by-hop fields and Content-Length. */
export function buildInterimHead(resp: ResponseHead): string {
  let out = `HTTP/1.1 ${resp.status} ${resp.reason}\r\n`;
  for (let f = 0; f < resp.fieldCount; f++) {
    const k = f * 4;
    const ns = resp.fields[k] as number;
    const ne = resp.fields[k + 1] as number;
    const lower = lowerAscii(resp.raw, ns, ne);
    if (HOP_BY_HOP.has(lower) || lower === 'content-length') continue;
    out += `${latin1(resp.raw, ns, resp.fields[k + 3] as number)}\r\n`;
  }
  return `${out}\r\n`;
}

/** 101 Switching Protocols: Connection and Upgrade are the point of it, so they stay. */
export function buildSwitchingHead(resp: ResponseHead, rules: HeaderRules): string {
  let out = `HTTP/1.1 101 ${resp.reason}\r\n`;
  for (let f = 0; f < resp.fieldCount; f++) {
    const k = f * 4;
    const lower = lowerAscii(resp.raw, resp.fields[k] as number, resp.fields[k + 1] as number);
    if (lower === 'keep-alive' || lower === 'proxy-connection' || rules.remove.has(lower)) continue;
    out += `${latin1(resp.raw, resp.fields[k] as number, resp.fields[k + 3] as number)}\r\n`;
  }
  for (const [name, value] of rules.set) out += `${name}: ${value}\r\n`;
  return `${out}\r\n`;
}

/** The field names the upstream's `Connection` lists (hop-by-hop, RFC 9110 §7.6.1), lower-case. */
export function connectionNamed(resp: ResponseHead): Set<string> | null {
  const value = resp.connection;
  // the usual value names no field: nothing to split
  if (value === '' || value === 'keep-alive' || value === 'close') return null;
  const plain = value.length <= 10 ? value.toLowerCase() : '';
  if (plain === 'keep-alive' || plain === 'close') return null;
  return connectionOptions(value, null);
}
