/**
 * Header-field lines shared by request and response heads (RFC 9112 §5): `name: OWS value OWS`,
 * name a token with no whitespace before the colon, no obs-fold, no control characters in the
 * value, lines ended by CRLF only. Offsets are written into a Uint32Array, nothing is copied.
 */
import { ZiplineError } from '../../errors.js';
import { isTchar } from './tokens.js';

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;

export const MAX_FIELDS = 200;

export function bad(message: string): ZiplineError {
  return new ZiplineError('ZL_HTTP_BAD_REQUEST', message);
}

export function parseField(buf: Buffer, start: number, eol: number, out: Uint32Array, n: number): void {
  checkLine(buf, start, eol);
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

/** No bare CR inside a line (bare LF cannot occur: lines are split on CRLF and checked by findHeadEnd). */
export function checkLine(buf: Buffer, start: number, end: number): void {
  const cr = buf.indexOf(CR, start);
  if (cr >= 0 && cr < end) throw bad('bare CR in message head');
  const lf = buf.indexOf(LF, start);
  if (lf >= 0 && lf < end) throw bad('bare LF in message head');
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

/** The codings list must end with exactly one `chunked` (RFC 9112 §6.1). */
export function finalCodingIsChunked(te: string): boolean {
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
