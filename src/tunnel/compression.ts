/**
 * zstd for DATA payloads, per stream (src/tunnel/SPEC.md, "Compression"). Each direction of a
 * stream has one zstd stream context, so later frames refer back to earlier ones (far better
 * ratios on small messages than compressing frames alone); every compressed frame is flushed, so
 * it decodes by itself given the frames before it.
 *
 * Rules: payloads under 256 B go as they are; a compressed payload is sent only when it saves at
 * least 10 %; a payload sent uncompressed ends the context's current zstd frame on both sides (the
 * receiver resets its context when it sees one), so the two contexts never disagree about history.
 * After 8 payloads in a row that did not compress, the stream stops trying.
 *
 * The module is optional (`zstd-napi` compiles at install; Windows may lack a compiler): without
 * it `available` is false and sessions negotiate no codec.
 */
import { createRequire } from 'node:module';
import { ERROR } from './constants.js';
import { TunnelProtocolError } from './frame.js';

interface ZstdBinding {
  CCtx: new () => {
    setParameter(p: number, v: number): void;
    reset(r: number): void;
    compressStream2(dst: Uint8Array, src: Uint8Array, end: number): [number, number, number];
  };
  DCtx: new () => {
    reset(r: number): void;
    decompressStream(dst: Uint8Array, src: Uint8Array): [number, number, number];
  };
  CParameter: { compressionLevel: number };
  EndDirective: { flush: number };
  ResetDirective: { sessionOnly: number };
}

let binding: ZstdBinding | null = null;
try {
  binding = createRequire(import.meta.url)('zstd-napi/binding') as ZstdBinding;
} catch {
  binding = null;
}

export const zstdAvailable = binding !== null;

export const MIN_COMPRESS = 256;
const GIVE_UP_AFTER = 8;
const LEVEL = 3;

/** Shared scratch output (compression is synchronous: one at a time per process). */
let scratch = Buffer.allocUnsafe(0);
function scratchOf(n: number): Buffer {
  if (scratch.length < n) scratch = Buffer.allocUnsafe(n);
  return scratch;
}

type CCtx = InstanceType<ZstdBinding['CCtx']>;
type DCtx = InstanceType<ZstdBinding['DCtx']>;

/**
 * zstd contexts are reused across streams: a context holds megabytes of native tables, and one
 * per stream made every stream pay the setup and left the garbage collector finalizing them.
 * A stream takes a context when it first needs one and gives it back when it ends (or, for a
 * compressor, when it gives up on compression).
 */
const POOL_MAX = 64;
const cctxPool: CCtx[] = [];
const dctxPool: DCtx[] = [];

function takeCctx(): CCtx {
  const b = binding as ZstdBinding;
  const c = cctxPool.pop();
  if (c !== undefined) return c;
  const fresh = new b.CCtx();
  fresh.setParameter(b.CParameter.compressionLevel, LEVEL);
  return fresh;
}

function takeDctx(): DCtx {
  return dctxPool.pop() ?? new (binding as ZstdBinding).DCtx();
}

export class StreamCompressor {
  private cctx: CCtx | null = null;
  private misses = 0;
  off = false;
  bytesIn = 0;
  bytesOut = 0;

  /**
   * The compressed payload (a fresh buffer) when it is worth sending, else null: send `chunk`
   * as it is (the context has been reset to match the receiver).
   */
  compress(chunk: Buffer): Buffer | null {
    if (this.off || chunk.length < MIN_COMPRESS) {
      if (!this.off) this.reset();
      return null;
    }
    const b = binding as ZstdBinding;
    this.cctx ??= takeCctx();
    const cctx = this.cctx;
    const limit = chunk.length - Math.ceil(chunk.length / 10); // must save ≥ 10 %
    const dst = scratchOf(chunk.length + 128);
    let produced = 0;
    let src = chunk;
    for (;;) {
      const [left, wrote, read] = cctx.compressStream2(dst.subarray(produced), src, b.EndDirective.flush);
      produced += wrote;
      src = src.subarray(read);
      if (left === 0 && src.length === 0) break;
      if (produced > limit) break;
    }
    this.bytesIn += chunk.length;
    if (produced > limit) {
      this.reset();
      this.bytesOut += chunk.length;
      if (++this.misses >= GIVE_UP_AFTER) {
        this.off = true;
        this.release(); // this stream will not compress again
      }
      return null;
    }
    this.misses = 0;
    this.bytesOut += produced;
    return Buffer.from(dst.subarray(0, produced));
  }

  private reset(): void {
    this.cctx?.reset((binding as ZstdBinding).ResetDirective.sessionOnly);
  }

  /** The stream ended (or gave up): its context goes back to the pool. */
  release(): void {
    const c = this.cctx;
    if (c === null) return;
    this.cctx = null;
    c.reset((binding as ZstdBinding).ResetDirective.sessionOnly);
    if (cctxPool.length < POOL_MAX) cctxPool.push(c);
  }
}

export class StreamDecompressor {
  private dctx: DCtx | null = null;

  constructor(private readonly maxPayload: number) {}

  /** An uncompressed DATA payload arrived: the sender ended its zstd frame. */
  reset(): void {
    this.dctx?.reset((binding as ZstdBinding).ResetDirective.sessionOnly);
  }

  /** The stream ended: its context goes back to the pool. */
  release(): void {
    const d = this.dctx;
    if (d === null) return;
    this.dctx = null;
    d.reset((binding as ZstdBinding).ResetDirective.sessionOnly);
    if (dctxPool.length < POOL_MAX) dctxPool.push(d);
  }

  /**
   * Decompresses one COMPRESSED payload. A sender never compresses more than `maxPayload` bytes
   * into one frame, so more output than that is a protocol error (no decompression bombs).
   */
  decompress(payload: Buffer): Buffer {
    const dst = scratchOf(this.maxPayload + 1);
    this.dctx ??= takeDctx();
    const dctx = this.dctx;
    let produced = 0;
    let src = payload;
    try {
      while (src.length > 0 || produced === 0) {
        const [, wrote, read] = dctx.decompressStream(dst.subarray(produced, this.maxPayload + 1), src);
        produced += wrote;
        src = src.subarray(read);
        if (produced > this.maxPayload)
          throw new TunnelProtocolError(
            ERROR.PROTOCOL_ERROR,
            'a compressed DATA payload expands beyond the max payload',
          );
        if (wrote === 0 && read === 0) break;
      }
    } catch (err) {
      if (err instanceof TunnelProtocolError) throw err;
      throw new TunnelProtocolError(ERROR.PROTOCOL_ERROR, `zstd: ${(err as Error).message}`);
    }
    return Buffer.from(dst.subarray(0, produced));
  }
}
