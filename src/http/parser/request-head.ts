/**
 * HTTP/1.1 request head parsing over raw bytes (RFC 9112), strict where leniency enables request
 * smuggling. The head is parsed in one pass once its end (CRLF CRLF) is known; field names and
 * values stay in the caller's buffer as offsets (no string per header unless asked for).
 *
 * Refused (and the connection must then be closed, RFC 9112 §6.3):
 * - any line ending that is not CRLF (bare LF or bare CR), obs-fold continuation lines,
 *   whitespace between a field name and its colon, control characters in values;
 * - Transfer-Encoding together with Content-Length; Transfer-Encoding in HTTP/1.0;
 *   a Transfer-Encoding whose final coding is not exactly `chunked`, or `chunked` twice;
 * - Content-Length that is not all digits, or several that disagree;
 * - HTTP/1.1 without a Host, any request with more than one (§3.2); a head larger than the limit
 *   (431);
 * - a request-target with a byte outside printable ASCII, or a `#` (a fragment);
 * - a request-target in none of the forms its method allows (§3.2): origin-form, absolute-form
 *   (`http(s)://authority/…`, whose authority then stands for the Host, §3.2.2), `*` for OPTIONS
 *   (CONNECT's authority-form is left to the caller: the forward proxy reads it);
 * Not implemented (501, and closed): Transfer-Encoding other than exactly `chunked`.
 */
import { ZiplineError } from '../../errors.js';
import {
  bad,
  connectionTokens,
  type FieldOffsets,
  lineEnd,
  MAX_FIELDS,
  mergeContentLengthAt,
  onlyChunked,
  persists,
  scanFields,
} from './fields.js';
import { F, fieldName } from './names.js';
import { commonLatin1, isTchar, latin1, nameIs } from './tokens.js';

export interface RequestHead {
  readonly method: string;
  readonly target: string;
  /** HTTP/1.<minor> */
  readonly minor: 0 | 1;
  /** The buffer the head was parsed from (not copied). */
  readonly raw: Buffer;
  /** Per field: [nameStart, nameEnd, valueStart, valueEnd) offsets into `raw`. */
  readonly fields: FieldOffsets;
  readonly fieldCount: number;
  /** Offset just after the CRLF CRLF that ends the head: the body starts here. */
  readonly headEnd: number;
  /** Declared body length; -1 when there is none (see `chunked`). */
  readonly contentLength: number;
  readonly chunked: boolean;
  readonly keepAlive: boolean;
  readonly expectContinue: boolean;
  /** The Upgrade header when `Connection: upgrade` asks for one. */
  readonly upgrade: string | null;
  /** The host the request is for: an absolute-form target's authority, else the Host header. */
  readonly host: string | null;
  /** The target is absolute-form: `host` is its authority, not the Host header (RFC 9112 §3.2.2). */
  readonly absoluteForm: boolean;
  /** An `Idempotency-Key` field is present (the request may be retried). */
  readonly idempotencyKey: boolean;
}

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HASH = 0x23;
const SLASH = 0x2f;

const MAX_METHOD = 32;

/** Heads longer than this are searched by `Buffer#indexOf` first (cheaper past ~100 bytes). */
const SEARCH_FROM = 96;
const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');

/**
 * Where the head ends in `buf[0, end)`: the offset after CRLF CRLF, or -1 when more bytes are
 * needed. Throws 431 once more than `maxBytes` arrive without an end, and 400 at the first bare
 * LF (a head ended by LF LF would otherwise wait for bytes that never come).
 *
 * A whole head longer than `SEARCH_FROM` (one read nearly always brings it all) is found by one
 * `indexOf` in C++ instead of a JavaScript loop over its bytes (~0.3 µs for a browser's 400);
 * a bare LF before its end is then the parse's 400 (`lineEnd` reads every line up to it), not
 * this one's. Without an end in range, the loop below decides.
 */
export function findHeadEnd(buf: Buffer, end: number, maxBytes: number): number {
  if (end > SEARCH_FROM) {
    const at = buf.indexOf(HEAD_END);
    if (at !== -1 && at + 4 <= end && at + 4 <= maxBytes) return at + 4;
  }
  for (let i = 0; i < end; i++) {
    if (buf[i] !== LF) continue;
    if (i === 0 || buf[i - 1] !== CR) throw bad('bare LF in request head');
    if (i >= 3 && buf[i - 2] === LF && buf[i - 3] === CR) {
      if (i + 1 > maxBytes) throw tooLarge();
      return i + 1;
    }
  }
  if (end > maxBytes) throw tooLarge();
  return -1;
}

function tooLarge(): ZiplineError {
  return new ZiplineError('ZL_HTTP_HEADERS_TOO_LARGE', 'request head larger than limits.max_header_bytes');
}

/**
 * `findHeadEnd` for a request: while the head is incomplete, its first bytes must still be able
 * to begin a request line (a method of at most 32 token bytes, then a space), else 400 at once,
 * as nginx answers at the first bad byte: a TLS ClientHello sent to a plain port, an SSH or
 * Redis client get their answer now, not at `client_header`. (The caller has dropped the empty
 * lines before a request line; a lone CR may be the first half of one more, and waits.)
 */
export function requestHeadEnd(buf: Buffer, maxBytes: number): number {
  let end: number;
  try {
    end = findHeadEnd(buf, buf.length, maxBytes);
  } catch (err) {
    if ((err as ZiplineError).code !== 'ZL_HTTP_HEADERS_TOO_LARGE') throw err;
    // a request line that alone does not fit is 414, as nginx answers (431 is for the fields)
    refuseNonRequest(buf);
    const lf = buf.indexOf(LF);
    if (lf === -1 || lf >= maxBytes) {
      throw new ZiplineError('ZL_HTTP_URI_TOO_LONG', 'request line larger than limits.max_header_bytes');
    }
    throw err;
  }
  if (end < 0) refuseNonRequest(buf);
  return end;
}

function refuseNonRequest(buf: Buffer): void {
  if (buf.length === 1 && buf[0] === CR) return;
  const n = Math.min(buf.length, MAX_METHOD + 1);
  for (let i = 0; i < n; i++) {
    const c = buf[i] as number;
    if (c === SP && i > 0) return;
    if (!isTchar(c)) throw bad('not an HTTP request');
  }
  if (n > MAX_METHOD) throw bad('malformed request method');
}

/** Scratch space for field offsets; each head keeps an exact-size copy. */
const SCRATCH: number[] = new Array<number>(MAX_FIELDS * 4).fill(0);

/** Parses a complete head: `buf[0, headEnd)` as found by `findHeadEnd`. */
export function parseRequestHead(buf: Buffer, headEnd: number): RequestHead {
  const requestLineEnd = lineEnd(buf, 0, headEnd);
  const { method, target, minor } = parseRequestLine(buf, requestLineEnd);
  const scratch = SCRATCH;
  const count = scanFields(buf, requestLineEnd + 2, headEnd, scratch, 'ZL_HTTP_HEADERS_TOO_LARGE');
  return frame(buf, method, target, minor, scratch.slice(0, count * 4), count, headEnd);
}

function parseRequestLine(buf: Buffer, lineEnd: number): { method: string; target: string; minor: 0 | 1 } {
  let i = 0;
  while (i < lineEnd && isTchar(buf[i] as number)) i++;
  if (i === 0 || i > MAX_METHOD || buf[i] !== SP) throw bad('malformed request method');
  const method = knownMethod(buf, i) ?? latin1(buf, 0, i);
  const targetStart = ++i;
  // printable ASCII but `#`: a fragment is the client's own (RFC 9112 §3.2), and a server that
  // cut the path there would serve another one than routed (HAProxy refuses it: CVE-2023-45539)
  while (i < lineEnd && (buf[i] as number) > SP && (buf[i] as number) < 0x7f && buf[i] !== HASH) i++;
  if (i === targetStart || buf[i] !== SP) throw bad('malformed request target');
  const target = latin1(buf, targetStart, i);
  const minor = http1Minor(buf, i + 1, lineEnd);
  if (minor !== -1) return { method, target, minor };
  const version = latin1(buf, i + 1, lineEnd);
  // a later HTTP/1 minor is served as the highest we implement (RFC 9110 §2.5; nginx does too)
  if (/^HTTP\/1\.[2-9]$/.test(version)) return { method, target, minor: 1 };
  if (/^HTTP\/\d\.\d$/.test(version)) {
    throw new ZiplineError('ZL_HTTP_VERSION_NOT_SUPPORTED', `unsupported version ${version}`);
  }
  throw bad('malformed HTTP version');
}

/** `GET`, `POST` and `HEAD` (most requests) as constants, read from the bytes; else null. */
function knownMethod(buf: Buffer, len: number): string | null {
  const c = buf[0];
  if (len === 3 && c === 0x47 && buf[1] === 0x45 && buf[2] === 0x54) return 'GET';
  if (len === 4 && c === 0x50 && buf[1] === 0x4f && buf[2] === 0x53 && buf[3] === 0x54) return 'POST';
  if (len === 4 && c === 0x48 && buf[1] === 0x45 && buf[2] === 0x41 && buf[3] === 0x44) return 'HEAD';
  return null;
}

/** 1 for exactly `HTTP/1.1`, 0 for `HTTP/1.0` at `buf[start, end)`; -1 for anything else. */
function http1Minor(buf: Buffer, start: number, end: number): 0 | 1 | -1 {
  if (
    end - start !== 8 ||
    buf[start] !== 0x48 ||
    buf[start + 1] !== 0x54 ||
    buf[start + 2] !== 0x54 ||
    buf[start + 3] !== 0x50 ||
    buf[start + 4] !== 0x2f ||
    buf[start + 5] !== 0x31 ||
    buf[start + 6] !== 0x2e
  )
    return -1;
  const d = buf[start + 7];
  return d === 0x31 ? 1 : d === 0x30 ? 0 : -1;
}

/** Message framing and connection semantics from the fields (RFC 9112 §6, §9). */
function frame(
  raw: Buffer,
  method: string,
  target: string,
  minor: 0 | 1,
  fields: FieldOffsets,
  fieldCount: number,
  headEnd: number,
): RequestHead {
  let contentLength = -1;
  let te: string | null = null;
  let hosts = 0;
  let host: string | null = null;
  let connection = '';
  let upgradeHeader: string | null = null;
  let expectContinue = false;
  let idempotencyKey = false;
  for (let f = 0; f < fieldCount; f++) {
    const k = f * 4;
    const id = fieldName(raw, fields[k] as number, fields[k + 1] as number);
    if (id === F.OTHER) continue;
    switch (id) {
      case F.CONTENT_LENGTH:
        contentLength = mergeContentLengthAt(
          contentLength,
          raw,
          fields[k + 2] as number,
          fields[k + 3] as number,
        );
        break;
      case F.TRANSFER_ENCODING:
        te = te === null ? valueAt(raw, fields, k) : `${te},${valueAt(raw, fields, k)}`;
        break;
      case F.HOST:
        hosts++;
        host = hostAt(raw, fields[k + 2] as number, fields[k + 3] as number);
        break;
      case F.CONNECTION:
        {
          const value = commonLatin1(raw, fields[k + 2] as number, fields[k + 3] as number);
          connection = connection === '' ? value : `${connection},${value}`;
        }
        break;
      case F.UPGRADE:
        upgradeHeader = valueAt(raw, fields, k);
        break;
      case F.EXPECT:
        expectContinue = valueAt(raw, fields, k).toLowerCase() === '100-continue';
        break;
      case F.IDEMPOTENCY_KEY:
        idempotencyKey = true;
        break;
    }
  }
  let chunked = false;
  if (te !== null) {
    if (minor === 0) throw bad('Transfer-Encoding in an HTTP/1.0 request');
    if (contentLength !== -1) throw bad('both Transfer-Encoding and Content-Length');
    chunked = onlyChunked(te, 'ZL_HTTP_NOT_IMPLEMENTED');
  }
  if (hosts > 1) throw bad('more than one Host header');
  if (minor === 1 && hosts === 0) throw bad('missing Host header');
  let absoluteForm = false;
  // CONNECT's authority-form target is its user's to read (a forward proxy; a reverse proxy
  // answers 501 to the method)
  if (method !== 'CONNECT' && target.charCodeAt(0) !== SLASH) {
    if (target === '*') {
      if (method !== 'OPTIONS') throw bad('asterisk-form request target on a method other than OPTIONS');
    } else {
      host = authorityOf(target);
      absoluteForm = true;
    }
  }
  const keepAlive = persists(connection, minor);
  // `Upgrade: h2c` (curl --http2 on http://) is not taken up, as Envoy does: the request is served
  // as HTTP/1.1; h2c clients with prior knowledge are served HTTP/2 by the listener (h2.ts)
  const upgrade =
    upgradeHeader !== null &&
    connection !== '' &&
    connectionTokens(connection).includes('upgrade') &&
    upgradeHeader.trim().toLowerCase() !== 'h2c'
      ? upgradeHeader
      : null;
  return {
    method,
    target,
    minor,
    raw,
    fields,
    fieldCount,
    headEnd,
    contentLength,
    chunked,
    keepAlive,
    expectContinue,
    upgrade,
    host,
    absoluteForm,
    idempotencyKey,
  };
}

/** The last well-formed Host value read (a proxy sees the same few names again and again). */
let lastHost = '';

/**
 * The Host value at `raw[start, end)`, checked by `validHost` (400 otherwise). The same bytes
 * as the last one give that string back: no call into C++ for the copy, no regular expression.
 */
function hostAt(raw: Buffer, start: number, end: number): string {
  const len = end - start;
  if (len === lastHost.length) {
    let i = 0;
    while (i < len && raw[start + i] === lastHost.charCodeAt(i)) i++;
    if (i === len) return lastHost;
  }
  const host = latin1(raw, start, end);
  if (!validHost(host)) throw bad('malformed Host header');
  lastHost = host;
  return host;
}

/** The value of the field whose offsets start at `fields[k]` (no closure per field). */
function valueAt(raw: Buffer, fields: FieldOffsets, k: number): string {
  return latin1(raw, fields[k + 2] as number, fields[k + 3] as number);
}

const ABSOLUTE_RE = /^https?:\/\/([^/?#]*)/i;

/** An absolute-form target's authority (no userinfo, RFC 9110 §4.2.4); 400 for anything else. */
function authorityOf(target: string): string {
  const m = ABSOLUTE_RE.exec(target);
  const authority = m === null ? '' : (m[1] as string);
  if (authority === '' || !validHost(authority)) throw bad('malformed request target');
  return authority;
}

/** RFC 3986 reg-name characters, and no empty label (`a..b`, refused by nginx too). */
function validHost(host: string): boolean {
  return HOST_RE.test(host) && !host.includes('..');
}

const HOST_RE = /^[A-Za-z0-9.\-_~!$&'()*+,;=%:[\]]*$/;

/** The value of the first field called `name` (lower case), or undefined. */
export function headerValue(head: RequestHead, name: string): string | undefined {
  for (let f = 0; f < head.fieldCount; f++) {
    const k = f * 4;
    if (nameIs(head.raw, head.fields[k] as number, head.fields[k + 1] as number, name)) {
      return latin1(head.raw, head.fields[k + 2] as number, head.fields[k + 3] as number);
    }
  }
  return undefined;
}

/** The value of cookie `name` (case-sensitive) in the request's Cookie fields (`a=1; b=2`, RFC 6265 §5.4). */
export function cookieValue(head: RequestHead, name: string): string | undefined {
  for (let f = 0; f < head.fieldCount; f++) {
    const k = f * 4;
    if (!nameIs(head.raw, head.fields[k] as number, head.fields[k + 1] as number, 'cookie')) continue;
    const text = latin1(head.raw, head.fields[k + 2] as number, head.fields[k + 3] as number);
    for (const pair of text.split(';')) {
      const eq = pair.indexOf('=');
      if (eq > 0 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
    }
  }
  return undefined;
}

/** `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4), or as much of it as has arrived (≥ its head). */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
export function isH2Preface(buf: Buffer): boolean {
  const n = Math.min(buf.length, H2_PREFACE.length);
  return n >= 18 && buf.compare(H2_PREFACE, 0, n, 0, n) === 0;
}
