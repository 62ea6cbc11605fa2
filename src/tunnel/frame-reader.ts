/**
 * Feeds a connection's bytes to the frame decoder with bounded work per event-loop turn (the
 * contract's parser rule, so PINGs and timers stay on time under a flood): after `framesPerTurn`
 * frames the rest of the chunk waits for the next turn, with the socket paused meanwhile, and
 * bytes arriving then are kept in order behind it.
 */
import type { Duplex } from 'node:stream';
import type { TunnelErrorCode } from './constants.js';
import { type FrameDecoder, TunnelProtocolError } from './frame.js';

export class FrameReader {
  private pendingChunk: Buffer | null = null;
  private pendingAt = 0;
  private stopped = false;

  constructor(
    private readonly socket: Duplex,
    private readonly decoder: FrameDecoder,
    private readonly framesPerTurn: number,
    /** A fatal protocol error (the decoder is dead after it). */
    private readonly onError: (code: TunnelErrorCode, message: string) => void,
  ) {}

  feed(chunk: Buffer): void {
    if (this.stopped) return;
    if (this.pendingChunk !== null) {
      // still working through an earlier chunk: keep order
      this.pendingChunk = Buffer.concat([this.pendingChunk.subarray(this.pendingAt), chunk]);
      this.pendingAt = 0;
      return;
    }
    this.decode(chunk, 0);
  }

  stop(): void {
    this.stopped = true;
    this.pendingChunk = null;
  }

  private decode(chunk: Buffer, at: number): void {
    try {
      const stop = this.decoder.feed(chunk, at, this.framesPerTurn);
      if (stop < chunk.length) {
        this.pendingChunk = chunk;
        this.pendingAt = stop;
        this.socket.pause();
        setImmediate(() => this.resume());
      }
    } catch (err) {
      if (err instanceof TunnelProtocolError) this.onError(err.code, err.message);
      else throw err;
    }
  }

  private resume(): void {
    const chunk = this.pendingChunk;
    const at = this.pendingAt;
    this.pendingChunk = null;
    if (chunk === null || this.stopped) return;
    this.socket.resume();
    this.decode(chunk, at);
  }
}
