/**
 * Upstream response heads (RFC 9112 §4, §6.3): status line, fields (shared rules with requests)
 * and how the body is delimited. Any malformed or ambiguous head is `ZL_UPSTREAM_BAD_RESPONSE`
 * (502 to the client; the upstream connection is not reused). Like nginx ≥ 1.23, a response with
 * both Content-Length and Transfer-Encoding is refused rather than guessed at.
 */
import { isZiplineError, ZiplineError } from '../../errors.js';
import { checkLine, finalCodingIsChunked, MAX_FIELDS, mergeContentLength, parseField } from './fields.js';
import { lowerAscii } from './tokens.js';

/** How the body is delimited: none at all, a length, chunked coding, or the connection's close. */
export type BodyKind = 'none' | 'length' | 'chunked' | 'close';

export interface ResponseHead {
  readonly status: number;
  readonly reason: string;
  readonly minor: 0 | 1;
  readonly raw: Buffer;
  readonly fields: Uint32Array;
  readonly fieldCount: number;
  readonly headEnd: number;
  readonly body: BodyKind;
  /** For `body: 'length'`; -1 otherwise. */
  readonly contentLength: number;
  /** The upstream connection may carry another request after this response. */
  readonly keepAlive: boolean;
}

/** Parses `buf[0, headEnd)` (end found by `findHeadEnd`) as the answer to `method`. */
export function parseResponseHead(buf: Buffer, headEnd: number, method: string): ResponseHead {
  try {
    return parse(buf, headEnd, method);
  } catch (err) {
    if (isZiplineError(err) && err.code.startsWith('ZL_HTTP_')) {
      throw new ZiplineError('ZL_UPSTREAM_BAD_RESPONSE', `upstream response: ${err.message}`, { cause: err });
    }
    throw err;
  }
}

function parse(buf: Buffer, headEnd: number, method: string): ResponseHead {
  const lineEnd = buf.indexOf('\r\n', 0, 'latin1');
  checkLine(buf, 0, lineEnd);
  const m = /^HTTP\/1\.([01]) (\d{3})(?: ([^\r\n]*))?$/.exec(buf.toString('latin1', 0, lineEnd));
  if (m === null) throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'malformed status line');
  const minor = m[1] === '1' ? 1 : 0;
  const status = Number(m[2]);
  if (status < 100) throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'status code below 100');
  const fields = new Uint32Array(MAX_FIELDS * 4);
  let count = 0;
  let pos = lineEnd + 2;
  let contentLength = -1;
  let te: string | null = null;
  let connection = '';
  while (pos < headEnd - 2) {
    const eol = buf.indexOf('\r\n', pos, 'latin1');
    if (count === MAX_FIELDS) throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'too many header fields');
    parseField(buf, pos, eol, fields, count);
    const k = count * 4;
    const name = lowerAscii(buf, fields[k] as number, fields[k + 1] as number);
    const value = buf.toString('latin1', fields[k + 2] as number, fields[k + 3] as number);
    if (name === 'content-length') contentLength = mergeContentLength(contentLength, value);
    else if (name === 'transfer-encoding') te = te === null ? value : `${te},${value}`;
    else if (name === 'connection') connection = connection === '' ? value : `${connection},${value}`;
    count++;
    pos = eol + 2;
  }
  const tokens = connection
    .toLowerCase()
    .split(',')
    .map((t) => t.trim());
  let keepAlive = minor === 1 ? !tokens.includes('close') : tokens.includes('keep-alive');
  let body: BodyKind;
  if (method === 'HEAD' || status < 200 || status === 204 || status === 304) {
    body = 'none'; // §6.3 rules 1 and 2: whatever the fields say
    contentLength = -1;
  } else if (te !== null) {
    if (contentLength !== -1)
      throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'both Transfer-Encoding and Content-Length');
    if (minor === 0)
      throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'Transfer-Encoding in an HTTP/1.0 response');
    body = isChunkedLast(te) ? 'chunked' : 'close';
  } else if (contentLength !== -1) {
    body = 'length';
  } else {
    body = 'close';
  }
  if (body === 'close') keepAlive = false; // the body ends with the connection
  return {
    status,
    reason: m[3] ?? '',
    minor,
    raw: buf,
    fields,
    fieldCount: count,
    headEnd,
    body,
    contentLength,
    keepAlive,
  };
}

/** In a response, codings not ending in chunked mean "read until close" (§6.3 rule 4). */
function isChunkedLast(te: string): boolean {
  try {
    return finalCodingIsChunked(te);
  } catch {
    const codings = te
      .toLowerCase()
      .split(',')
      .map((c) => c.trim());
    if (codings.filter((c) => c === 'chunked').length > 1 || codings.slice(0, -1).includes('chunked')) {
      throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'chunked applied more than once or not last');
    }
    return false;
  }
}
