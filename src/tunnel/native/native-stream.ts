/**
 * One stream of a native session, as a Duplex (the same surface as src/tunnel/stream.ts). Two
 * ways to use it:
 * - as a Duplex: reading switches the engine to deliver received bytes here (C.stJs); credit goes
 *   back as the reader consumes (C.stConsumed); writes go to the engine (C.stWrite), with
 *   backpressure from its EV.stTaken reports;
 * - attached to a socket (`attachSocket`, what `pipeStream` tries first): the engine moves the
 *   bytes both ways itself, half-close and idle timeout included, and reports once how it ended
 *   (EV.stDone). JavaScript keeps its socket object (paused, not reading) so the entry's
 *   accounting and drain see the connection; it closes it when the engine reports.
 * Until one of the two is chosen, the engine keeps what arrives (within the stream's window).
 */
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { isZiplineError, ZiplineError } from '../../errors.js';
import type { PipeResult } from '../../proxy/pipe.js';
import { ERROR } from '../constants.js';
import type { SessionStream, StreamInfo } from '../session-api.js';
import { abortStream, peerResetError } from '../stream-ends.js';
import { C, DONE, type DoneReason } from './binding.js';

/** What a stream needs from its session. */
export interface NativeStreamHost {
  command(kind: number, stream: number, a?: number, data?: Buffer | null, fd?: number): void;
  forget(stream: NativeStream): void;
}

/** Written bytes the engine has not framed yet beyond this hold the writer's callback. */
const WRITE_HIGH_WATER = 256 * 1024;
const EMPTY = Buffer.alloc(0);

interface Attached {
  readonly socket: Socket;
  readonly done: (r: PipeResult) => void;
  readonly onClose: () => void;
}

export class NativeStream extends Duplex implements SessionStream {
  info: StreamInfo = {};
  reset = false;
  /** The code of the peer's RST, when it reset the stream. */
  peerResetCode: number | null = null;
  /** Where received bytes go: kept by the engine, read here, or written to a socket by it. */
  mode: 'pending' | 'js' | 'fd' = 'pending';
  finReceived = false;
  private ended = false;
  private written = 0;
  private taken = 0;
  private heldWrite: ((err?: Error | null) => void) | null = null;
  /** Received, pushed, and not yet consumed by the reader. */
  private recvBuffered = 0;
  private attached: Attached | null = null;
  /** The engine reported the attached stream's end (no RST or release needed beyond release). */
  private engineDone = false;

  constructor(
    readonly id: number,
    private readonly host: NativeStreamHost,
  ) {
    super({ allowHalfOpen: true, highWaterMark: 64 * 1024 });
  }

  // ---- from the engine --------------------------------------------------------------------------

  onData(data: Buffer | null, fin: boolean): void {
    if (this.destroyed) return;
    if (data !== null && data.length > 0) {
      this.recvBuffered += data.length;
      this.push(data);
    }
    if (fin && !this.finReceived) {
      this.finReceived = true;
      this.push(null);
    }
  }

  onTaken(total: number): void {
    this.taken = total;
    if (this.heldWrite !== null && this.written - this.taken <= WRITE_HIGH_WATER) {
      const cb = this.heldWrite;
      this.heldWrite = null;
      cb();
    }
  }

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

  /** The engine let go of the attached socket: close ours the way it ended, report, forget. */
  onDone(reason: DoneReason, _errno: number, fromSocket: number, toSocket: number): void {
    const a = this.attached;
    if (a === null || this.engineDone) return;
    this.engineDone = true;
    this.attached = null;
    a.socket.off('close', a.onClose);
    let error: PipeResult['error'] = null;
    if (reason === DONE.reset) {
      this.reset = true;
      error = 'ZL_TUNNEL_RESET';
      if (!a.socket.destroyed) a.socket.resetAndDestroy();
    } else {
      if (reason === DONE.idle) error = 'idle_timeout';
      else if (reason === DONE.session) error = 'ZL_TUNNEL_CLOSED';
      else if (reason !== DONE.done) this.reset = true;
      a.socket.destroy();
    }
    const r: PipeResult = {
      fromSocket: a.socket.bytesRead + fromSocket,
      toSocket: a.socket.bytesWritten + toSocket,
      error,
    };
    this.destroy();
    a.done(r);
  }

  // ---- attaching --------------------------------------------------------------------------------

  /**
   * Hands `socket` to the engine, which then moves the bytes both ways (as `pipeStream` would).
   * False when it cannot (the stream is read already, has writes queued, or the socket has no
   * descriptor): the caller pipes in JavaScript instead. `done` runs once, after both are closed.
   */
  attachSocket(socket: Socket, idleTimeoutMs: number, done: (r: PipeResult) => void): boolean {
    const handle = (socket as unknown as { _handle?: { fd?: number; readStop?: () => void } | null })._handle;
    const fd = typeof handle?.fd === 'number' ? handle.fd : -1;
    if (
      this.mode !== 'pending' ||
      this.destroyed ||
      this.reset ||
      this.writableLength > 0 ||
      fd < 0 ||
      socket.destroyed
    )
      return false;
    this.mode = 'fd';
    socket.pause();
    // what the socket already read goes first (in order: commands are queued); reading its
    // buffer may restart libuv's reads, so they stop after, in the same turn (nothing is read
    // in between: libuv reads only when this turn returns to the loop)
    for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null)
      this.enqueue(chunk);
    const h = handle as { reading?: boolean; readStop?: () => void };
    h.reading = false;
    h.readStop?.();
    const onClose = (): void => {
      // our socket went first (destroyAll, an error): the engine resets the stream and reports
      if (!this.engineDone) this.host.command(C.stReset, this.id, ERROR.CANCEL);
    };
    this.attached = { socket, done, onClose };
    socket.once('close', onClose);
    socket.on('error', () => {});
    const go = (): void => {
      if (this.engineDone || socket.destroyed) {
        if (!this.engineDone) this.host.command(C.stReset, this.id, ERROR.CANCEL);
        return;
      }
      this.host.command(C.stAttach, this.id, idleTimeoutMs >>> 0, null, fd);
    };
    // bytes we wrote to the socket (a SOCKS5 reply) must reach it before the engine's
    if (socket.writableLength > 0) socket.write(EMPTY, go);
    else go();
    return true;
  }

  // ---- Duplex -----------------------------------------------------------------------------------

  private enqueue(chunk: Buffer): void {
    this.written += chunk.length;
    this.host.command(C.stWrite, this.id, 0, chunk);
  }

  override _read(): void {
    if (this.mode === 'pending') {
      this.mode = 'js';
      this.host.command(C.stJs, this.id);
    }
    const consumed = this.recvBuffered - this.readableLength;
    if (consumed <= 0 || this.mode !== 'js') return;
    this.recvBuffered -= consumed;
    this.host.command(C.stConsumed, this.id, consumed);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.reset) {
      cb(new ZiplineError('ZL_TUNNEL_RESET', 'the stream was reset'));
      return;
    }
    this.enqueue(chunk);
    if (this.written - this.taken > WRITE_HIGH_WATER) this.heldWrite = cb;
    else cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.ended = true;
    this.host.command(C.stEnd, this.id);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.attached !== null) {
      // destroyed while the engine holds the socket: it resets, and reports to onDone (ignored)
      const a = this.attached;
      this.attached = null;
      a.socket.off('close', a.onClose);
      this.engineDone = true;
      this.reset = true;
      this.host.command(C.stReset, this.id, ERROR.CANCEL);
      a.socket.destroy();
      a.done({
        fromSocket: a.socket.bytesRead,
        toSocket: a.socket.bytesWritten,
        error: err !== null && isZiplineError(err) ? err.code : null,
      });
    } else if (!this.reset && !this.engineDone && !(this.ended && this.finReceived)) {
      this.reset = true;
      this.host.command(C.stReset, this.id, ERROR.CANCEL);
    }
    const held = this.heldWrite;
    this.heldWrite = null;
    held?.(err ?? new ZiplineError('ZL_TUNNEL_CLOSED', 'stream destroyed'));
    this.host.command(C.stRelease, this.id);
    this.host.forget(this);
    cb(err);
  }
}
