/**
 * Joins a stream (a tunnel stream or a socket to a destination) and a client socket both ways:
 * bytes with backpressure (pipe), half-close carried as FIN both ways, a reset passed on as a
 * reset, and one teardown on the first error, reset or idle timeout. `done` runs exactly once,
 * when both sides are closed, with the first error code if any.
 */
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ErrorCode } from '../errors.js';
import { isZiplineError } from '../errors.js';
import { endedByReset, resetSocket } from '../l4/reset-socket.js';

export interface PipeResult {
  /** Bytes the socket read and wrote over its life (handshakes included). */
  readonly fromSocket: number;
  readonly toSocket: number;
  readonly error: ErrorCode | 'idle_timeout' | null;
}

/**
 * The far side: a tunnel stream (`reset` when the peer reset it) or a socket. A native tunnel
 * stream can take the socket itself (`attachSocket`): its engine then moves the bytes, with the
 * same half-close, reset and idle rules, and calls `done` once.
 */
export type FarSide = Duplex & {
  reset?: boolean;
  /**
   * It closes itself once both halves are over and its FIN has gone out (a JavaScript tunnel
   * stream, whose FIN waits in the session's data lane): destroying it sooner would reset it and
   * drop what it still queues.
   */
  readonly closesWhenDone?: boolean;
  attachSocket?: (socket: Socket, idleTimeoutMs: number, done: (r: PipeResult) => void) => boolean;
};

export function pipeStream(
  stream: FarSide,
  socket: Socket,
  idleTimeoutMs: number,
  done: (r: PipeResult) => void,
): void {
  if (stream.destroyed) {
    // it ended before it reached us (its tunnel session closed in the read that accepted it, or
    // its server reset it): its 'close' has been and gone, so nothing below would ever see it end.
    // A reset is passed on as a reset, as on the live path
    const why = stream.errored as NodeJS.ErrnoException | null;
    if (stream.reset === true || (stream instanceof Socket && why !== null && isReset(why))) {
      resetSocket(socket);
    } else socket.destroy();
    done({
      fromSocket: socket.bytesRead,
      toSocket: socket.bytesWritten,
      // a tunnel stream (it has `reset`) or a socket to a destination
      error: isZiplineError(why)
        ? why.code
        : stream.reset === undefined
          ? 'ZL_UPSTREAM_RESET'
          : 'ZL_TUNNEL_CLOSED',
    });
    return;
  }
  if (stream.attachSocket?.(socket, idleTimeoutMs, done) === true) return;
  let error: PipeResult['error'] = null;
  let closed = 0;
  let finished = false;
  const finish = (): void => {
    if (finished || ++closed < 2) return;
    finished = true;
    done({ fromSocket: socket.bytesRead, toSocket: socket.bytesWritten, error });
  };
  const abort = (code: PipeResult['error']): void => {
    error ??= code;
    // a far side its peer reset (an RST frame) is passed on as a reset; otherwise a close
    if (stream.reset === true) resetSocket(socket);
    else socket.destroy();
    stream.destroy();
  };
  socket.setNoDelay(true);
  if (idleTimeoutMs > 0) {
    socket.setTimeout(idleTimeoutMs, () => abort('idle_timeout'));
  }
  // a reset on one side is passed on as a reset: a socket is reset, a tunnel stream's destroy
  // sends its RST
  const passReset = (to: Duplex): void => {
    if (to instanceof Socket) resetSocket(to);
  };
  socket.on('error', (err: NodeJS.ErrnoException) => {
    if (isReset(err)) passReset(stream);
    abort(null);
  });
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (stream instanceof Socket && isReset(err)) passReset(socket);
    abort(isZiplineError(err) ? err.code : null);
  });
  socket.once('close', () => {
    // a socket that closed without both FINs (reset) takes the stream with it
    if (!stream.destroyed && !(stream.writableFinished && stream.readableEnded)) stream.destroy();
    finish();
  });
  stream.once('close', () => {
    if (!socket.destroyed && !(socket.writableFinished && socket.readableEnded)) {
      // the stream was reset (or its session ended): abortive, as the peer intended
      if (stream.reset === true) resetSocket(socket);
      else socket.destroy();
    }
    finish();
  });
  // both halves ended cleanly: close what is left
  let finAwaited = false;
  const maybeClose = (): void => {
    if (stream.readableEnded && socket.readableEnded && stream.writableFinished && socket.writableFinished) {
      socket.destroy();
      if (stream.closesWhenDone !== true) stream.destroy();
      else if (idleTimeoutMs > 0 && !finAwaited) {
        // its FIN may wait behind bytes its peer grants no window for: not longer than idle
        finAwaited = true;
        const deadline = setTimeout(() => abort('idle_timeout'), idleTimeoutMs);
        deadline.unref();
        stream.once('close', () => clearTimeout(deadline));
      }
    }
  };
  // a FIN is passed on; an RST that came with a socket's last bytes reaches Node as an end too
  // (reset-socket.ts), and is a reset
  const ended = (from: Duplex, to: Duplex) => (): void => {
    if (from instanceof Socket && endedByReset(from)) {
      passReset(to);
      abort(null);
      return;
    }
    to.end();
    maybeClose();
  };
  const socketEnded = ended(socket, stream);
  const streamEnded = ended(stream, socket);
  socket.on('end', socketEnded);
  stream.on('end', streamEnded);
  socket.on('finish', maybeClose);
  stream.on('finish', maybeClose);
  socket.pipe(stream, { end: false });
  stream.pipe(socket, { end: false });
  // a side whose end came before this (a client's FIN with its request) ends no more: as pipe()
  // does for it, its end is passed on now
  if (socket.readableEnded) process.nextTick(socketEnded);
  if (stream.readableEnded) process.nextTick(streamEnded);
}

function isReset(err: NodeJS.ErrnoException): boolean {
  return err.code === 'ECONNRESET' || err.code === 'EPIPE';
}
