/**
 * Chunked transfer coding decoder (RFC 9112 §7.1) as a state machine over any split of the byte
 * stream: data is handed out as subarrays of the input (zero-copy), nothing is buffered but the
 * state. Strict: hex sizes only (at most 13 digits), CRLF only, chunk extensions bounded and
 * exactly as RFC 9112 §7.1.1 writes them (`;name`, `;name=token`, `;name="quoted"`, with optional
 * whitespace around `;` and `=`), trailer fields well-formed, bounded and not framing
 * (`Content-Length`, `Transfer-Encoding`). Any violation is a `ZL_HTTP_BAD_REQUEST`; the
 * connection must then be closed. Chunks pass through as framed, so whatever this accepts, the
 * next hop parses too: an extension read one way here and another way there (an unterminated
 * quote, a stray byte) is how a body is smuggled, so nothing loose is let through.
 *
 * States: size → (ext) → size-LF → data → data-CR → data-LF → size … → last chunk (size 0) →
 * trailer lines → done. `feed` returns how many bytes it consumed: all of them until the message
 * ends, then the offset just after it (what follows belongs to the next message).
 */
import { ZiplineError } from '../../errors.js';
import { isTchar } from './tokens.js';

type State =
  | 'size'
  | 'ext'
  | 'size_lf'
  | 'data'
  | 'data_cr'
  | 'data_lf'
  | 'trailer_start'
  | 'trailer_line'
  | 'trailer_lf'
  | 'end_lf'
  | 'done';

const CR = 0x0d;
const LF = 0x0a;
const HTAB = 0x09;
const MAX_SIZE_DIGITS = 13; // < 2^52: exact in a double
const MAX_EXT_BYTES = 4096;
const MAX_TRAILER_BYTES = 16 * 1024;

// chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] ), one byte at a time
const EXT_BEFORE_NAME = 0; // after `;`: whitespace, then a name
const EXT_NAME = 1;
const EXT_AFTER_NAME = 2; // whitespace after a name: `=` or `;` must follow
const EXT_BEFORE_VALUE = 3;
const EXT_TOKEN = 4;
const EXT_QUOTED = 5;
const EXT_ESCAPE = 6; // after `\` in a quoted string
const EXT_AFTER_VALUE = 7; // just after a value: `;`, CR or whitespace
const EXT_WS_AFTER_VALUE = 8; // whitespace after a value: `;` must follow
const EXT_END = 9; // the CR that ends the size line
const SP = 0x20;
const SEMI = 0x3b;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const CONTENT_LENGTH = Buffer.from('content-length');
const TRANSFER_ENCODING = Buffer.from('transfer-encoding');

/** The last chunk of a chunked body without trailers (RFC 9112 §7.1). */
export const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');

export type ChunkSink = (data: Buffer) => void;
/** Told `buf[from, to)` is chunk-extension bytes (from its `;` up to the CR of its size line). */
export type ExtensionSink = (from: number, to: number) => void;

export class ChunkedDecoder {
  state: State = 'size';
  /** Body bytes decoded so far. */
  received = 0;
  private size = 0;
  private digits = 0;
  private remaining = 0;
  private extBytes = 0;
  private ext = EXT_BEFORE_NAME;
  private trailerBytes = 0;
  private lineStart = true;
  private sawColon = false;
  private nameOk = true;
  /** Bytes of the trailer field name so far, and which framing name it can still be. */
  private nameLength = 0;
  private maybeLength = true;
  private maybeEncoding = true;

  get done(): boolean {
    return this.state === 'done';
  }

  /**
   * Decodes `buf[start, end)`; returns the offset where it stopped (end, or the message's end).
   * `extensions`, if given, is told where chunk extensions are (a proxy forwarding the framing
   * drops them, as nginx, HAProxy and Envoy do by re-chunking).
   */
  feed(buf: Buffer, start: number, end: number, sink: ChunkSink, extensions?: ExtensionSink): number {
    let i = start;
    let extFrom = this.state === 'ext' ? start : -1;
    while (i < end && this.state !== 'done') {
      if (this.state === 'data') {
        const n = Math.min(this.remaining, end - i);
        sink(buf.subarray(i, i + n));
        this.remaining -= n;
        this.received += n;
        i += n;
        if (this.remaining === 0) this.state = 'data_cr';
        continue;
      }
      const before = this.state;
      this.step(buf[i] as number);
      if (before === 'size' && this.state === 'ext') extFrom = i;
      else if (before === 'ext' && this.state !== 'ext') {
        extensions?.(extFrom, i); // up to the CR, which stays
        extFrom = -1;
      }
      i++;
    }
    if (this.state === 'ext' && extFrom >= 0) extensions?.(extFrom, i);
    return i;
  }

  /** One byte of framing (everything but chunk data). Long by design: one case per state. */
  private step(c: number): void {
    switch (this.state) {
      case 'size': {
        const v = hexValue(c);
        if (v >= 0) {
          if (++this.digits > MAX_SIZE_DIGITS) throw bad('chunk size too large');
          this.size = this.size * 16 + v;
          return;
        }
        if (this.digits === 0) throw bad('missing chunk size');
        if (c === CR) this.state = 'size_lf';
        else if (c === SEMI) {
          this.state = 'ext';
          this.ext = EXT_BEFORE_NAME;
        } else throw bad('invalid chunk size');
        return;
      }
      case 'ext':
        if (++this.extBytes > MAX_EXT_BYTES) throw bad('chunk extension too long');
        this.ext = extStep(this.ext, c);
        if (this.ext === EXT_END) this.state = 'size_lf';
        return;
      case 'size_lf':
        if (c !== LF) throw bad('chunk size line not ended by CRLF');
        this.digits = 0;
        this.extBytes = 0;
        if (this.size === 0) {
          this.state = 'trailer_start';
        } else {
          this.remaining = this.size;
          this.size = 0;
          this.state = 'data';
        }
        return;
      case 'data_cr':
        if (c !== CR) throw bad('chunk data not followed by CRLF');
        this.state = 'data_lf';
        return;
      case 'data_lf':
        if (c !== LF) throw bad('chunk data not followed by CRLF');
        this.state = 'size';
        return;
      case 'trailer_start':
        // an empty line ends the message; anything else starts a trailer field
        if (c === CR) {
          this.state = 'end_lf';
          return;
        }
        this.lineStart = true;
        this.sawColon = false;
        this.nameOk = true;
        this.nameLength = 0;
        this.maybeLength = true;
        this.maybeEncoding = true;
        this.state = 'trailer_line';
        this.trailerByte(c);
        return;
      case 'trailer_line':
        if (c === CR) {
          if (!this.sawColon || !this.nameOk) throw bad('malformed trailer field');
          this.state = 'trailer_lf';
          return;
        }
        this.trailerByte(c);
        return;
      case 'trailer_lf':
        if (c !== LF) throw bad('trailer field not ended by CRLF');
        this.state = 'trailer_start';
        return;
      case 'end_lf':
        if (c !== LF) throw bad('chunked message not ended by CRLF');
        this.state = 'done';
        return;
      default:
        return;
    }
  }

  private trailerByte(c: number): void {
    if (++this.trailerBytes > MAX_TRAILER_BYTES) throw bad('trailer section too large');
    if (c === LF || (c < 0x20 && c !== HTAB) || c === 0x7f) throw bad('control character in trailer');
    if (!this.sawColon) {
      if (c === 0x3a /* : */) {
        if (this.lineStart) throw bad('empty trailer field name');
        this.sawColon = true;
        // framing belongs in the header section (RFC 9110 §6.5.1); llhttp refuses it here too
        const n = this.nameLength;
        if (
          (this.maybeLength && n === CONTENT_LENGTH.length) ||
          (this.maybeEncoding && n === TRANSFER_ENCODING.length)
        )
          throw bad('framing field in trailer');
      } else if (!isTchar(c)) {
        this.nameOk = false;
      } else {
        const lower = c | 0x20; // the names are letters and '-' (0x2d | 0x20 is itself)
        const n = this.nameLength++;
        this.maybeLength &&= CONTENT_LENGTH[n] === lower;
        this.maybeEncoding &&= TRANSFER_ENCODING[n] === lower;
      }
    }
    this.lineStart = false;
  }
}

/** The next state of a chunk extension after byte `c`; throws on anything RFC 9112 §7.1.1 does not allow. */
function extStep(state: number, c: number): number {
  const ws = c === SP || c === HTAB;
  switch (state) {
    case EXT_BEFORE_NAME:
      if (ws) return state;
      if (isTchar(c)) return EXT_NAME;
      break;
    case EXT_NAME:
      if (isTchar(c)) return state;
      if (c === 0x3d /* = */) return EXT_BEFORE_VALUE;
      if (c === SEMI) return EXT_BEFORE_NAME;
      if (c === CR) return EXT_END;
      if (ws) return EXT_AFTER_NAME;
      break;
    case EXT_AFTER_NAME:
      if (ws) return state;
      if (c === 0x3d) return EXT_BEFORE_VALUE;
      if (c === SEMI) return EXT_BEFORE_NAME;
      break;
    case EXT_BEFORE_VALUE:
      if (ws) return state;
      if (c === DQUOTE) return EXT_QUOTED;
      if (isTchar(c)) return EXT_TOKEN;
      break;
    case EXT_TOKEN:
      if (isTchar(c)) return state;
      return afterValue(c);
    case EXT_QUOTED:
      if (c === DQUOTE) return EXT_AFTER_VALUE;
      if (c === BACKSLASH) return EXT_ESCAPE;
      if (c === HTAB || (c >= SP && c !== 0x7f)) return state; // qdtext, obs-text included
      break;
    case EXT_ESCAPE:
      if (c === HTAB || (c >= SP && c !== 0x7f)) return EXT_QUOTED; // quoted-pair
      break;
    case EXT_AFTER_VALUE:
      return afterValue(c);
    case EXT_WS_AFTER_VALUE:
      if (ws) return state;
      if (c === SEMI) return EXT_BEFORE_NAME;
      break;
  }
  throw bad('malformed chunk extension');
}

function afterValue(c: number): number {
  if (c === SEMI) return EXT_BEFORE_NAME;
  if (c === CR) return EXT_END;
  if (c === SP || c === HTAB) return EXT_WS_AFTER_VALUE;
  throw bad('malformed chunk extension');
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

function bad(message: string): ZiplineError {
  return new ZiplineError('ZL_HTTP_BAD_REQUEST', message);
}
