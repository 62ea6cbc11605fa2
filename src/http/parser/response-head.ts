/**
 * Upstream response heads (RFC 9112 §4, §6.3): status line, fields (shared rules with requests)
 * and how the body is delimited. Any malformed or ambiguous head is `ZL_UPSTREAM_BAD_RESPONSE`
 * (502 to the client; the upstream connection is not reused). Like nginx ≥ 1.23, a response with
 * both Content-Length and Transfer-Encoding is refused rather than guessed at.
 */
import { isZiplineError, ZiplineError } from '../../errors.js';
import {
  type FieldOffsets,
  lineEnd,
  MAX_FIELDS,
  mergeContentLengthAt,
  onlyChunked,
  persists,
  scanFields,
} from './fields.js';
import { F, fieldName } from './names.js';
import { commonLatin1 } from './tokens.js';

/** How the body is delimited: none at all, a length, chunked coding, or the connection's close. */
export type BodyKind = 'none' | 'length' | 'chunked' | 'close';

export interface ResponseHead {
  readonly status: number;
  readonly reason: string;
  readonly minor: 0 | 1;
  /** The bytes `fields` index into: upstream reads are a shared buffer, so use it synchronously. */
  readonly raw: Buffer;
  /**
   * Field offsets as in `RequestHead`, in a scratch array shared by every response parse: valid
   * until the next `parseResponseHead` call (the head is used synchronously, then dropped).
   */
  readonly fields: FieldOffsets;
  readonly fieldCount: number;
  readonly headEnd: number;
  readonly body: BodyKind;
  /** For `body: 'length'`; -1 otherwise. */
  readonly contentLength: number;
  /** The upstream connection may carry another request after this response. */
  readonly keepAlive: boolean;
  /** The `Connection` values joined with commas; '' without one. */
  readonly connection: string;
  /** Where the status line ends (its CRLF); the reason phrase, if any, starts at 13. */
  readonly statusLineEnd: number;
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

const SCRATCH: number[] = new Array<number>(MAX_FIELDS * 4).fill(0);
function parse(buf: Buffer, headEnd: number, method: string): ResponseHead {
  const statusLineEnd = lineEnd(buf, 0, headEnd);
  const { minor, status, reason } = parseStatusLine(buf, statusLineEnd);
  const fields = SCRATCH;
  let contentLength = -1;
  let te: string | null = null;
  let connection = '';
  const fieldCount = scanFields(buf, statusLineEnd + 2, headEnd, fields, 'ZL_HTTP_BAD_REQUEST');
  for (let f = 0; f < fieldCount; f++) {
    const k = f * 4;
    const id = fieldName(buf, fields[k] as number, fields[k + 1] as number);
    if (id === F.CONTENT_LENGTH) {
      contentLength = mergeContentLengthAt(
        contentLength,
        buf,
        fields[k + 2] as number,
        fields[k + 3] as number,
      );
    } else if (id === F.TRANSFER_ENCODING || id === F.CONNECTION) {
      const value = commonLatin1(buf, fields[k + 2] as number, fields[k + 3] as number);
      if (id === F.TRANSFER_ENCODING) te = te === null ? value : `${te},${value}`;
      else connection = connection === '' ? value : `${connection},${value}`;
    }
  }
  let keepAlive = persists(connection, minor);
  // a final head's framing fields are checked even where they frame nothing (HEAD, 204, 304), as
  // its Content-Length is: a HEAD's mirror a GET's, and a server that sends both is as broken
  // there (nginx refuses them for every response)
  if (te !== null && status >= 200) {
    if (contentLength !== -1)
      throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'both Transfer-Encoding and Content-Length');
    if (minor === 0)
      throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'Transfer-Encoding in an HTTP/1.0 response');
    // other codings would reach the client without them (nginx: "upstream sent unknown
    // Transfer-Encoding", 502)
    onlyChunked(te, 'ZL_HTTP_BAD_REQUEST');
  }
  let body: BodyKind;
  if (method === 'HEAD' || status < 200 || status === 204 || status === 304) {
    body = 'none'; // §6.3 rules 1 and 2: whatever the fields say
    contentLength = -1;
  } else if (te !== null) {
    body = 'chunked';
  } else if (contentLength !== -1) {
    body = 'length';
  } else {
    body = 'close';
  }
  if (body === 'close') keepAlive = false; // the body ends with the connection
  return {
    status,
    reason,
    minor,
    raw: buf,
    fields,
    fieldCount,
    headEnd,
    body,
    contentLength,
    keepAlive,
    connection,
    statusLineEnd,
  };
}

const STATUS_LINE_START = Buffer.from('HTTP/1.', 'latin1');

/**
 * Whether the bytes of a head not yet complete can still begin a status line (`HTTP/1.`): a
 * server that answers in another protocol (TLS, SSH, a Redis error) is bad at once rather than
 * when its response_header timeout runs out.
 */
export function mayStartStatusLine(buf: Buffer): boolean {
  const n = Math.min(buf.length, STATUS_LINE_START.length);
  for (let i = 0; i < n; i++) if (buf[i] !== STATUS_LINE_START[i]) return false;
  return true;
}

/** `HTTP/1.x SP 3DIGIT [SP reason]`, byte by byte (a regex here cost ~4 % per request). */
function parseStatusLine(buf: Buffer, lineEnd: number): { minor: 0 | 1; status: number; reason: string } {
  // "HTTP/1." is 48 84 84 80 2f 31 2e
  if (
    lineEnd < 12 ||
    buf[0] !== 0x48 ||
    buf[1] !== 0x54 ||
    buf[2] !== 0x54 ||
    buf[3] !== 0x50 ||
    buf[4] !== 0x2f ||
    buf[5] !== 0x31 ||
    buf[6] !== 0x2e ||
    (buf[7] !== 0x30 && buf[7] !== 0x31) ||
    buf[8] !== 0x20
  ) {
    throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'malformed status line');
  }
  let status = 0;
  for (let i = 9; i < 12; i++) {
    const d = (buf[i] as number) - 0x30;
    if (d < 0 || d > 9) throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'malformed status code');
    status = status * 10 + d;
  }
  // RFC 9110 §15: 600–999 are invalid, and HTTP/2 cannot carry them; a recipient treats them as 5xx
  if (status < 100 || status > 599)
    throw new ZiplineError('ZL_HTTP_BAD_REQUEST', `status code ${status} outside 100–599`);
  if (lineEnd > 12 && buf[12] !== 0x20)
    throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'malformed status line');
  return {
    minor: buf[7] === 0x31 ? 1 : 0,
    status,
    reason: lineEnd > 13 ? commonLatin1(buf, 13, lineEnd) : '',
  };
}
