/**
 * MS frames (src/tunnel/SPEC.md): an encoder that writes frames back to back into one buffer
 * (so small frames leave in one socket write), and an incremental decoder — a state machine over
 * any split of the byte stream, zero-copy when a frame lies inside one chunk, the length checked
 * against its limit before anything is allocated, the CRC verified before a frame is dispatched.
 * A fatal error is a `TunnelProtocolError` carrying the GOAWAY code to send.
 */
import { crc32 as zlibCrc32 } from 'node:zlib';
import {
  CRC_SIZE,
  DEFAULT_MAX_PAYLOAD,
  ERROR,
  FIRST_EXTENSION_TYPE,
  FRAME,
  FRAME_OVERHEAD,
  HEADER_SIZE,
  MAGIC,
  MAX_CONTROL_PAYLOAD,
  MAX_WINDOW_DELTA,
  type TunnelErrorCode,
} from './constants.js';
import { crc32 } from './crc.js';

export class TunnelProtocolError extends Error {
  constructor(
    readonly code: TunnelErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'TunnelProtocolError';
  }
}

const CORE_TYPES = new Set<number>(Object.values(FRAME));

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  readonly payload: Buffer;
}

export type FrameHandler = (type: number, flags: number, streamId: number, payload: Buffer) => void;

/** Writes one frame at `out[offset…]`; returns the offset after it. `out` must have room. */
export function writeFrame(
  out: Buffer,
  offset: number,
  type: number,
  flags: number,
  streamId: number,
  payload: Uint8Array | null,
): number {
  const len = payload === null ? 0 : payload.length;
  out.writeUInt16BE(MAGIC, offset);
  out.writeUInt32BE(len, offset + 2);
  out[offset + 6] = type;
  out[offset + 7] = flags;
  out.writeUInt32BE(streamId, offset + 8);
  if (payload !== null && len > 0) out.set(payload, offset + HEADER_SIZE);
  const end = offset + HEADER_SIZE + len;
  out.writeUInt32BE(crc32(out.subarray(offset, end)), end);
  return end + CRC_SIZE;
}

/**
 * The DATA payload size we send for a negotiated max: whole TLS records per frame. OpenSSL cuts a
 * write into 16 KiB records; a frame of exactly k × 16 KiB (payload k × 16 KiB − 16) then lies
 * inside its own records, so the receiver gets it in one chunk (the decoder's zero-copy path, one
 * push per frame) instead of a frame straddling records (copied together from two reads).
 */
export function recordAligned(maxPayload: number): number {
  const RECORD = 16 * 1024;
  const k = Math.floor((maxPayload + FRAME_OVERHEAD) / RECORD);
  return k >= 1 ? k * RECORD - FRAME_OVERHEAD : maxPayload;
}

/** One frame in a buffer of its own. */
export function encodeFrame(
  type: number,
  flags: number,
  streamId: number,
  payload: Uint8Array | null,
): Buffer {
  const out = Buffer.allocUnsafe(HEADER_SIZE + (payload?.length ?? 0) + CRC_SIZE);
  writeFrame(out, 0, type, flags, streamId, payload);
  return out;
}

/**
 * Frames queued for one socket write. `take()` hands the bytes over (the socket owns them until
 * written) and starts a fresh buffer; buffers are sized to what was last needed.
 */
export class FrameWriter {
  private buf: Buffer;
  private used = 0;

  constructor(private readonly initial = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  get pending(): number {
    return this.used;
  }

  push(type: number, flags: number, streamId: number, payload: Uint8Array | null): void {
    const need = HEADER_SIZE + (payload?.length ?? 0) + CRC_SIZE;
    if (this.used + need > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.used + need));
      this.buf.copy(grown, 0, 0, this.used);
      this.buf = grown;
    }
    this.used = writeFrame(this.buf, this.used, type, flags, streamId, payload);
  }

  /** The queued frames as one buffer (null when none). */
  take(): Buffer | null {
    if (this.used === 0) return null;
    const out = this.buf.subarray(0, this.used);
    this.buf = Buffer.allocUnsafe(Math.max(this.initial, this.used));
    this.used = 0;
    return out;
  }
}

type State = 'header' | 'body' | 'crc' | 'dead';

/**
 * Incremental decoder. `feed(chunk)` dispatches every complete frame to the handler and keeps the
 * partial one; it throws a `TunnelProtocolError` at the first fatal error (the session then sends
 * GOAWAY with its code and closes; the decoder stays dead). With `maxFrames`, a feed stops after
 * that many frames and returns where it stopped, so a session can yield to its timers (PING).
 */
export class FrameDecoder {
  private state: State = 'header';
  private readonly header = Buffer.allocUnsafe(HEADER_SIZE);
  private headerFill = 0;
  private payload: Buffer = Buffer.alloc(0);
  private payloadFill = 0;
  private readonly crcBytes = Buffer.allocUnsafe(CRC_SIZE);
  private crcFill = 0;
  private type = 0;
  private flags = 0;
  private streamId = 0;
  private length = 0;
  /** Frames decoded so far. */
  frames = 0;

  constructor(
    private readonly onFrame: FrameHandler,
    /** The negotiated max payload of DATA/DATAGRAM frames. */
    public maxDataPayload = DEFAULT_MAX_PAYLOAD,
  ) {}

  /** Decodes `chunk[start…]`; returns the offset where it stopped (chunk.length unless `maxFrames` ran out). */
  feed(chunk: Buffer, start = 0, maxFrames = Number.POSITIVE_INFINITY): number {
    if (this.state === 'dead')
      throw new TunnelProtocolError(ERROR.PROTOCOL_ERROR, 'decoder used after a fatal error');
    let i = start;
    let budget = maxFrames;
    try {
      while (i < chunk.length && budget > 0) {
        if (this.state === 'header' && this.headerFill === 0 && chunk.length - i >= HEADER_SIZE) {
          // fast path: the header, and perhaps the whole frame, lies in this chunk
          this.checkHeader(chunk, i);
          const total = HEADER_SIZE + this.length + CRC_SIZE;
          if (chunk.length - i >= total) {
            const end = i + HEADER_SIZE + this.length;
            if (crc32(chunk.subarray(i, end)) !== chunk.readUInt32BE(end)) throw crcError(this.type);
            this.dispatch(chunk.subarray(i + HEADER_SIZE, end));
            i += total;
            budget--;
            continue;
          }
          chunk.copy(this.header, 0, i, i + HEADER_SIZE);
          this.headerFill = HEADER_SIZE;
          i += HEADER_SIZE;
          this.startBody();
          continue;
        }
        if (this.state === 'header') {
          const n = Math.min(HEADER_SIZE - this.headerFill, chunk.length - i);
          chunk.copy(this.header, this.headerFill, i, i + n);
          this.headerFill += n;
          i += n;
          if (this.headerFill === HEADER_SIZE) {
            this.checkHeader(this.header, 0);
            this.startBody();
          }
          continue;
        }
        if (this.state === 'body') {
          const n = Math.min(this.length - this.payloadFill, chunk.length - i);
          chunk.copy(this.payload, this.payloadFill, i, i + n);
          this.payloadFill += n;
          i += n;
          if (this.payloadFill === this.length) this.state = 'crc';
          continue;
        }
        // crc
        const n = Math.min(CRC_SIZE - this.crcFill, chunk.length - i);
        chunk.copy(this.crcBytes, this.crcFill, i, i + n);
        this.crcFill += n;
        i += n;
        if (this.crcFill === CRC_SIZE) {
          // a frame that arrived in pieces: header and payload are separate buffers (zlib continues a CRC)
          const crc = zlibCrc32(this.payload, zlibCrc32(this.header));
          if (crc !== this.crcBytes.readUInt32BE(0)) throw crcError(this.type);
          const payload = this.payload;
          this.headerFill = 0;
          this.crcFill = 0;
          this.payloadFill = 0;
          this.payload = EMPTY;
          this.state = 'header';
          this.dispatch(payload);
          budget--;
        }
      }
    } catch (err) {
      this.state = 'dead';
      throw err;
    }
    return i;
  }

  /** Magic, type and length (against its limit, before any allocation). */
  private checkHeader(buf: Buffer, at: number): void {
    if (buf.readUInt16BE(at) !== MAGIC) {
      throw new TunnelProtocolError(ERROR.PROTOCOL_ERROR, 'bad magic (not an MS frame)');
    }
    const length = buf.readUInt32BE(at + 2);
    const type = buf[at + 6] as number;
    if (type < FIRST_EXTENSION_TYPE && !CORE_TYPES.has(type)) {
      throw new TunnelProtocolError(ERROR.PROTOCOL_ERROR, `unknown frame type 0x${type.toString(16)}`);
    }
    const limit = type === FRAME.DATA || type === FRAME.DATAGRAM ? this.maxDataPayload : MAX_CONTROL_PAYLOAD;
    if (length > limit) {
      throw new TunnelProtocolError(
        ERROR.FRAME_SIZE_ERROR,
        `frame of ${length} bytes over the limit of ${limit}`,
      );
    }
    this.length = length;
    this.type = type;
    this.flags = buf[at + 7] as number;
    this.streamId = buf.readUInt32BE(at + 8);
  }

  private startBody(): void {
    this.payloadFill = 0;
    this.crcFill = 0;
    if (this.length === 0) {
      this.payload = EMPTY;
      this.state = 'crc';
    } else {
      this.payload = Buffer.allocUnsafe(this.length);
      this.state = 'body';
    }
  }

  private dispatch(payload: Buffer): void {
    this.frames++;
    if (this.type >= FIRST_EXTENSION_TYPE) return; // unknown extensions are ignored
    if (this.type === FRAME.WINDOW_UPDATE) {
      const delta = payload.length === 4 ? payload.readUInt32BE(0) : 0;
      if (delta === 0 || delta > MAX_WINDOW_DELTA) {
        throw new TunnelProtocolError(
          ERROR.FLOW_CONTROL_ERROR,
          `WINDOW_UPDATE delta ${delta} out of 1…2^31−1`,
        );
      }
    }
    this.onFrame(this.type, this.flags, this.streamId, payload);
  }
}

const EMPTY = Buffer.alloc(0);

function crcError(type: number): TunnelProtocolError {
  return new TunnelProtocolError(ERROR.CRC_ERROR, `CRC mismatch on a frame of type 0x${type.toString(16)}`);
}

/** A u32 payload (WINDOW_UPDATE delta, RST code). */
export function u32Payload(v: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(v);
  return b;
}

/** GOAWAY: the last stream the peer opened that we took, the error code, retry-after, reason. */
export function goawayPayload(
  lastStream: number,
  code: TunnelErrorCode,
  retryAfterMs: number,
  reason: string,
): Buffer {
  const p = Buffer.alloc(12 + Buffer.byteLength(reason));
  p.writeUInt32BE(lastStream, 0);
  p.writeUInt32BE(code, 4);
  p.writeUInt32BE(retryAfterMs, 8);
  p.write(reason, 12);
  return p;
}
