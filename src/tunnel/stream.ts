/**
 * One logical stream of a tunnel session, as a Node Duplex. Writes queue bytes for the session's
 * writer (which sends them within this stream's and the connection's send windows); received DATA
 * is pushed to the reader, and credit goes back to the peer (WINDOW_UPDATE) as the application
 * *consumes* it, so a stalled reader stops its own sender and nobody else's. The receive window
 * starts at `initialWindow` and doubles (up to `maxWindow`) when the reader drains a whole window
 * within one PING interval.
 */
import { Duplex } from 'node:stream';
import { ZiplineError } from '../errors.js';
import type { StreamCompressor, StreamDecompressor } from './compression.js';
import { ERROR, type TunnelErrorCode } from './constants.js';
import type { SessionStream, StreamInfo } from './session-api.js';
import { abortStream, peerResetError } from './stream-ends.js';

export interface StreamHost {
  /** New bytes are queued on `s`: schedule the writer. */
  wakeWriter(s: TunnelStream): void;
  /** Credit for `bytes` consumed by the application. */
  sendWindowUpdate(s: TunnelStream, bytes: number): void;
  /** The application reset the stream. */
  sendReset(s: TunnelStream, code: TunnelErrorCode): void;
  /** The application consumed `bytes` (connection-level credit goes back as it does). */
  consumed(bytes: number): void;
  /** The stream is done both ways (or reset): forget it. */
  release(s: TunnelStream): void;
  readonly pingIntervalMs: number;
}

export class TunnelStream extends Duplex implements SessionStream {
  /** Bytes waiting to be framed, and their callbacks (called once framed: backpressure). */
  readonly queue: Buffer[] = [];
  queuedBytes = 0;
  private readonly queueCallbacks: ((err?: Error | null) => void)[] = [];
  /** The peer's credit for us. */
  sendWindow: number;
  /** Our FIN is queued (after the queued bytes). */
  finQueued = false;
  finSent = false;
  finReceived = false;
  reset = false;
  /** The code of the peer's RST, when it reset the stream. */
  peerResetCode: number | null = null;
  /** Bytes received and not yet consumed / credited. */
  private unacked = 0;
  private recvWindow: number;
  private recvBuffered = 0;
  private windowStartedAt = Date.now();
  bytesIn = 0;
  bytesOut = 0;
  /** Set when the session negotiated zstd (src/tunnel/compression.ts). */
  compressor: StreamCompressor | null = null;
  decompressor: StreamDecompressor | null = null;
  /** Free-form labels for access lines and /stats (destination, entry). */
  info: StreamInfo = {};

  constructor(
    readonly id: number,
    private readonly host: StreamHost,
    initialSendWindow: number,
    initialWindow: number,
    private readonly maxWindow: number,
  ) {
    // not autoDestroy: Node would destroy a stream whose two halves ended (its 'finish' comes on
    // a nextTick) before the session has framed its FIN (a microtask later), and _destroy would
    // then reset a stream that was closing cleanly; maybeClose destroys it once the FIN is out
    super({ allowHalfOpen: true, highWaterMark: 64 * 1024, autoDestroy: false });
    this.sendWindow = initialSendWindow;
    this.recvWindow = initialWindow;
    this.once('end', this.maybeClose);
    this.once('finish', this.maybeClose);
  }

  /** pipeStream leaves the close to maybeClose: see FarSide.closesWhenDone. */
  readonly closesWhenDone = true;

  /** Closes once both halves are over: our FIN sent, the peer's read to the end. */
  readonly maybeClose = (): void => {
    if (!this.destroyed && this.finSent && this.readableEnded && this.writableFinished) this.destroy();
  };

  get receiveWindow(): number {
    return this.recvWindow;
  }

  // ---- from the peer -----------------------------------------------------------------------

  /** DATA for this stream; false when it exceeds what we allowed (FLOW_CONTROL_ERROR). */
  receive(payload: Buffer, fin: boolean): boolean {
    if (payload.length > 0) {
      this.recvBuffered += payload.length;
      if (this.recvBuffered > this.recvWindow) return false;
      this.bytesIn += payload.length;
      this.push(payload);
    }
    if (fin && !this.finReceived) {
      this.finReceived = true;
      this.push(null);
    }
    return true;
  }

  /** The peer reset it. */
  resetByPeer(code: number): void {
    if (this.reset) return;
    this.reset = true;
    this.peerResetCode = code;
    this.abort(peerResetError(code));
  }

  /** Destroys with `err` when someone listens for errors, else quietly (no crash). */
  abort(err: Error): void {
    abortStream(this, err);
  }

  // ---- Duplex ---------------------------------------------------------------------------------

  override _read(): void {
    // the application took what was pushed: everything buffered beyond Node's queue is consumed
    const consumed = this.recvBuffered - this.readableLength;
    if (consumed <= 0) return;
    this.recvBuffered -= consumed;
    this.unacked += consumed;
    this.host.consumed(consumed);
    if (this.unacked >= this.recvWindow / 2) {
      const now = Date.now();
      let grow = 0;
      if (now - this.windowStartedAt < this.host.pingIntervalMs && this.recvWindow < this.maxWindow) {
        grow = Math.min(this.recvWindow, this.maxWindow - this.recvWindow); // a fast reader: double it
        this.recvWindow += grow;
      }
      this.windowStartedAt = now;
      this.host.sendWindowUpdate(this, this.unacked + grow);
      this.unacked = 0;
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.reset) {
      cb(new ZiplineError('ZL_TUNNEL_RESET', 'the stream was reset'));
      return;
    }
    this.queue.push(chunk);
    this.queuedBytes += chunk.length;
    this.queueCallbacks.push(cb);
    this.host.wakeWriter(this);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.finQueued = true;
    this.host.wakeWriter(this);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.reset && !(this.finSent && this.finReceived)) {
      this.reset = true;
      this.host.sendReset(this, ERROR.CANCEL);
    }
    for (const c of this.queueCallbacks.splice(0))
      c(err ?? new ZiplineError('ZL_TUNNEL_CLOSED', 'stream destroyed'));
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.compressor?.release();
    this.decompressor?.release();
    // bytes received and never read still held connection credit
    if (this.recvBuffered > 0) this.host.consumed(this.recvBuffered);
    this.recvBuffered = 0;
    this.host.release(this);
    cb(err);
  }

  /**
   * Takes up to `max` queued bytes for one DATA frame (the writer calls this); the write callbacks
   * of fully taken chunks run, so the application may write more.
   */
  takeChunk(max: number): Buffer | null {
    if (this.queue.length === 0 || max <= 0) return null;
    const head = this.queue[0] as Buffer;
    let out: Buffer;
    if (head.length <= max) {
      out = head;
      this.queue.shift();
      (this.queueCallbacks.shift() as (err?: Error | null) => void)();
    } else {
      out = head.subarray(0, max);
      this.queue[0] = head.subarray(max);
    }
    this.queuedBytes -= out.length;
    this.bytesOut += out.length;
    return out;
  }

  /** Both directions finished: the session may forget it. */
  get done(): boolean {
    return this.finSent && this.finReceived;
  }
}
