/**
 * Where a client's request body ends (RFC 9112 §6.3): after Content-Length bytes, or at the last
 * chunk of a chunked body validated as it arrives (`parser/chunked.ts`, passed on as framed, its
 * chunk extensions dropped: nginx, HAProxy and Envoy re-chunk, so servers never see them, and a
 * server that reads one differently could be told a different body). One per client connection,
 * reset for each request.
 */
import { ZiplineError } from '../errors.js';
import { ChunkedDecoder } from './parser/chunked.js';
import type { RequestHead } from './parser/request-head.js';

/** What takes the body's bytes (the request's exchange). */
export interface BodySink {
  /** `chunk` is the sink's to keep. */
  bodyChunk(chunk: Buffer): void;
}

export class ClientBody {
  /** The whole body has arrived (or there was none). */
  done = true;
  /** The route's `max_body`, for chunked bodies (a Content-Length is checked before any byte). */
  limit = Number.POSITIVE_INFINITY;
  private remaining = 0;
  private decoder: ChunkedDecoder | null = null;
  /** Chunk extensions in the bytes being fed ([from, to) pairs): not forwarded. */
  private readonly extensions: number[] = [];
  private readonly onExtension = (from: number, to: number): void => {
    this.extensions.push(from, to);
  };

  /** The body of the request `head` starts; false when it has none. */
  begin(head: RequestHead): boolean {
    // contentLength is -1 without the field
    this.decoder = head.chunked ? new ChunkedDecoder() : null;
    this.remaining = head.chunked ? 0 : Math.max(0, head.contentLength);
    this.done = !head.chunked && this.remaining === 0;
    return !this.done;
  }

  /**
   * Body bytes in `buf[start…)` go to `sink`, copied (they view a shared read buffer); returns the
   * offset after the body's last byte (`done` is then set). Throws the decoder's ZiplineError on
   * a malformed chunked body, and ZL_HTTP_BODY_TOO_LARGE past `limit` (none of that read is sent).
   */
  feed(buf: Buffer, start: number, sink: BodySink | null): number {
    const decoder = this.decoder;
    let stop: number;
    this.extensions.length = 0;
    if (decoder !== null) {
      stop = decoder.feed(buf, start, buf.length, ignoreData, this.onExtension);
      if (decoder.received > this.limit) {
        throw new ZiplineError(
          'ZL_HTTP_BODY_TOO_LARGE',
          `chunked request body over max_body (${this.limit} bytes)`,
        );
      }
      this.done = decoder.done;
    } else {
      stop = start + Math.min(this.remaining, buf.length - start);
      this.remaining -= stop - start;
      this.done = this.remaining === 0;
    }
    if (stop > start && sink !== null) {
      const chunk =
        this.extensions.length === 0
          ? Buffer.from(buf.subarray(start, stop))
          : withoutRanges(buf, start, stop, this.extensions);
      if (chunk.length > 0) sink.bodyChunk(chunk); // a read of extension bytes alone forwards nothing
    }
    if (this.done) this.decoder = null;
    return stop;
  }

  /** No body is being read (between requests, or the connection gave up on it). */
  reset(): void {
    this.decoder = null;
    this.limit = Number.POSITIVE_INFINITY;
    this.remaining = 0;
    this.done = true;
  }
}

function ignoreData(): void {}

/** A copy of `buf[start, stop)` without the `[from, to)` pairs in `ranges` (in order, inside it). */
function withoutRanges(buf: Buffer, start: number, stop: number, ranges: readonly number[]): Buffer {
  let kept = stop - start;
  for (let r = 0; r < ranges.length; r += 2) kept -= (ranges[r + 1] as number) - (ranges[r] as number);
  const out = Buffer.allocUnsafe(kept);
  let at = 0;
  let from = start;
  for (let r = 0; r < ranges.length; r += 2) {
    at += buf.copy(out, at, from, ranges[r] as number);
    from = ranges[r + 1] as number;
  }
  buf.copy(out, at, from, stop);
  return out;
}
