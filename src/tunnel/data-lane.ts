/**
 * The writer's DATA lane (src/tunnel/SPEC.md, "Scheduling"): streams with bytes or a FIN queued
 * take turns, round-robin, each frame within the stream's send window, the connection window and
 * the socket budget. Compression (zstd, when negotiated) happens here, as payloads are framed.
 */
import { FLAG, FRAME } from './constants.js';
import type { FrameWriter } from './frame.js';
import type { TunnelStream } from './stream.js';

/** A stream the lane can make progress on now. */
function sendable(s: TunnelStream): boolean {
  return (s.queuedBytes > 0 && s.sendWindow > 0) || (s.finQueued && !s.finSent && s.queuedBytes === 0);
}

export class DataLane {
  private readonly ready: TunnelStream[] = [];
  private readonly readySet = new Set<TunnelStream>();
  /** DATA bytes given to zstd and what was sent for them (ratio = in / out). */
  compressIn = 0;
  compressOut = 0;
  /** DATA frames written by the last `fill`. */
  framesWritten = 0;

  constructor(
    /** A stream's FIN went out (it may be done both ways now). */
    private readonly onFinSent: (s: TunnelStream) => void,
  ) {}

  /** `s` has something queued. */
  wake(s: TunnelStream): void {
    if (this.readySet.has(s)) return;
    this.readySet.add(s);
    this.ready.push(s);
  }

  forget(s: TunnelStream): void {
    this.readySet.delete(s);
  }

  /** Whether some stream could send now (window permitting). */
  hasSendable(): boolean {
    return this.ready.some(sendable);
  }

  /**
   * Frames DATA into `out` until the budget, the connection window or the queued streams run
   * out. Returns the bytes of payload taken (the caller charges its connection window);
   * `framesWritten` says how many frames that made (no result object per flush).
   */
  fill(out: FrameWriter, budget: number, connWindow: number, maxPayload: number): number {
    let left = budget;
    let conn = connWindow;
    let frames = 0;
    let progress = true;
    while (left > 0 && this.ready.length > 0 && progress) {
      progress = false;
      for (let n = this.ready.length; n > 0 && left > 0; n--) {
        const s = this.ready.shift() as TunnelStream;
        const chunk = s.takeChunk(Math.min(maxPayload, s.sendWindow, conn, left));
        if (chunk !== null) {
          s.sendWindow -= chunk.length;
          conn -= chunk.length;
          left -= chunk.length;
          progress = true;
        }
        const fin = s.finQueued && !s.finSent && s.queuedBytes === 0;
        if (chunk !== null || fin) {
          let payload = chunk;
          let flags = fin ? FLAG.FIN : 0;
          if (chunk !== null && s.compressor !== null && !s.compressor.off) {
            const z = s.compressor.compress(chunk);
            if (z !== null) {
              payload = z;
              flags |= FLAG.COMPRESSED;
            }
            this.compressIn += chunk.length;
            this.compressOut += (payload as Buffer).length;
          }
          out.push(FRAME.DATA, flags, s.id, payload);
          frames++;
          if (fin) {
            s.finSent = true;
            progress = true;
            this.onFinSent(s);
          }
        }
        if ((s.queuedBytes > 0 || (s.finQueued && !s.finSent)) && !s.reset) this.ready.push(s);
        else this.readySet.delete(s);
      }
    }
    this.framesWritten = frames;
    return connWindow - conn;
  }
}
