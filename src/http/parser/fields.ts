/**
 * Header-field lines shared by request and response heads (RFC 9112 §5): `name: OWS value OWS`,
 * name a token with no whitespace before the colon, no obs-fold, no control characters in the
 * value, lines ended by CRLF only. Offsets are written into an array, nothing is copied.
 */
import { type ErrorCode, ZiplineError } from '../../errors.js';
import { isTchar, latin1, TCHAR } from './tokens.js';

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;

export const MAX_FIELDS = 200;

/**
 * Four offsets per field (name start, name end, value start, value end). A plain array of small
 * integers, not a Uint32Array: a request head keeps its own copy, and copying a packed array is
 * a few stores in the young generation, where a typed array past 64 bytes mallocs a backing
 * store that V8 then has to track and sweep (~40 ns a head).
 */
export type FieldOffsets = number[];

export function bad(message: string): ZiplineError {
  return new ZiplineError('ZL_HTTP_BAD_REQUEST', message);
}

/** `buf[start, eol)` is one line as `lineEnd` found it (no CR or LF inside). */
export function parseField(buf: Buffer, start: number, eol: number, out: FieldOffsets, n: number): void {
  const first = buf[start] as number;
  if (first === SP || first === HTAB) throw bad('obsolete line folding in header field');
  let i = start;
  while (i < eol && isTchar(buf[i] as number)) i++;
  if (i === start || buf[i] !== COLON) throw bad('malformed header field name');
  const nameEnd = i++;
  while (i < eol && (buf[i] === SP || buf[i] === HTAB)) i++;
  let valueEnd = eol;
  while (valueEnd > i && (buf[valueEnd - 1] === SP || buf[valueEnd - 1] === HTAB)) valueEnd--;
  for (let j = i; j < valueEnd; j++) {
    const c = buf[j] as number;
    if ((c < SP && c !== HTAB) || c === 0x7f) throw bad('control character in header field value');
  }
  const k = n * 4;
  out[k] = start;
  out[k + 1] = nameEnd;
  out[k + 2] = i;
  out[k + 3] = valueEnd;
}

/**
 * The field lines of a head, `buf[start, end)` (`end`: after its CRLF CRLF), into `out` (four
 * offsets per field as `parseField` writes them); returns how many. A line goes through one loop
 * that accepts only a well-formed field ending in CRLF; any other line (or the one past the
 * limit) is scanned again by `lineEnd` and `parseField`, which throw the error the rules give in
 * their order (line end, field count, folding, name, value). About half the byte reads of those
 * two over every line.
 */
export function scanFields(
  buf: Buffer,
  start: number,
  end: number,
  out: FieldOffsets,
  tooMany: ErrorCode,
): number {
  const max = out.length >> 2;
  let n = 0;
  let pos = start;
  while (pos < end - 2) {
    let i = pos;
    let c = buf[i] as number;
    while (TCHAR[c] === 1) c = buf[++i] as number;
    if (i !== pos && c === COLON && n < max) {
      const nameEnd = i;
      c = buf[++i] as number;
      while (c === SP || c === HTAB) c = buf[++i] as number;
      const valueStart = i;
      let valueEnd = i;
      for (;;) {
        if (c > SP && c !== 0x7f) valueEnd = ++i;
        else if (c === SP || c === HTAB) ++i;
        else break;
        c = buf[i] as number;
      }
      if (c === CR && i < end && buf[i + 1] === LF) {
        const k = n * 4;
        out[k] = pos;
        out[k + 1] = nameEnd;
        out[k + 2] = valueStart;
        out[k + 3] = valueEnd;
        n++;
        pos = i + 2;
        continue;
      }
    }
    const eol = lineEnd(buf, pos, end);
    if (n === max) throw new ZiplineError(tooMany, 'too many header fields');
    parseField(buf, pos, eol, out, n);
    n++;
    pos = eol + 2;
  }
  return n;
}

/**
 * Where the line starting at `start` ends: the offset of its CR, which must be followed by LF
 * (a bare CR or LF is refused). One scan in JavaScript: lines are short, and `Buffer#indexOf`
 * (a call into C++, three per line before) cost more than the bytes it looked at. `limit` is the
 * head's end, which a CRLF always precedes.
 */
export function lineEnd(buf: Buffer, start: number, limit: number): number {
  for (let i = start; i < limit; i++) {
    const c = buf[i] as number;
    if (c === CR) {
      if (buf[i + 1] !== LF) throw bad('bare CR in message head');
      return i;
    }
    if (c === LF) throw bad('bare LF in message head');
  }
  throw bad('message head without an ending line');
}

/**
 * `mergeContentLength` over the value's bytes: a plain run of 1–15 digits (every real response)
 * is read from the bytes, anything else (a list, junk) goes through the string rules.
 */
export function mergeContentLengthAt(current: number, buf: Buffer, start: number, end: number): number {
  if (end > start && end - start <= 15) {
    let n = 0;
    let i = start;
    for (; i < end; i++) {
      const d = (buf[i] as number) - 0x30;
      if (d < 0 || d > 9) break;
      n = n * 10 + d;
    }
    if (i === end) {
      if (current !== -1 && current !== n) throw bad('conflicting Content-Length values');
      return n;
    }
  }
  return mergeContentLength(current, latin1(buf, start, end));
}

/**
 * Whether a connection persists after this message, from its `Connection` value(s) (RFC 9112
 * §9.3): HTTP/1.1 unless `close`, HTTP/1.0 only with `keep-alive`. One plain token, the usual
 * case, needs no split.
 */
export function persists(connection: string, minor: 0 | 1): boolean {
  if (connection === '') return minor === 1;
  if (connection === 'keep-alive') return true; // as most servers write it: no lower-casing
  const one = connection.length <= 10 ? connection.toLowerCase() : '';
  if (one === 'keep-alive') return true;
  if (one === 'close') return false;
  const tokens = connectionTokens(connection);
  return minor === 1 ? !tokens.includes('close') : tokens.includes('keep-alive');
}

/** The tokens of `Connection` values, lower case. */
export function connectionTokens(connection: string): string[] {
  return connection
    .toLowerCase()
    .split(',')
    .map((t) => t.trim());
}

const DIGITS = /^\d{1,15}$/;

/** Content-Length may repeat (or be a list) only with one value (RFC 9110 §8.6). */
export function mergeContentLength(current: number, text: string): number {
  if (DIGITS.test(text)) {
    const n = Number(text);
    if (current !== -1 && current !== n) throw bad('conflicting Content-Length values');
    return n;
  }
  let value = current;
  for (const part of text.split(',')) {
    const t = part.trim();
    if (!/^\d{1,15}$/.test(t)) throw bad('malformed Content-Length');
    const n = Number(t);
    if (value !== -1 && value !== n) throw bad('conflicting Content-Length values');
    value = n;
  }
  return value;
}

/**
 * A Transfer-Encoding zipline can pass on (RFC 9112 §6.1): exactly `chunked`. One that does not
 * end in exactly one `chunked` is malformed (400: the body's end is unknown). One with codings
 * before it throws `otherCodings` (requests: 501, as nginx; responses: 502): zipline re-declares
 * only `chunked`, so passing the body on would silently drop the other codings.
 */
export function onlyChunked(te: string, otherCodings: ErrorCode): true {
  if (te === 'chunked') return true;
  finalCodingIsChunked(te);
  if (te.indexOf(',') >= 0 && te.split(',').filter((c) => c.trim() !== '').length > 1) {
    throw new ZiplineError(otherCodings, `Transfer-Encoding ${te} (only chunked is implemented)`);
  }
  return true;
}

/** The codings list must end with exactly one `chunked` (RFC 9112 §6.1). */
function finalCodingIsChunked(te: string): boolean {
  const codings = te
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '');
  const chunkedAt = codings.indexOf('chunked');
  if (codings.length === 0 || chunkedAt !== codings.length - 1) {
    throw bad('Transfer-Encoding must end with chunked, exactly once');
  }
  return true;
}
