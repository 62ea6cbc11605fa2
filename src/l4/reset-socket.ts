/**
 * TCP resets, both ways: sending one (`resetSocket`) and telling one that arrived from a FIN
 * (`endedByReset`).
 */
import type { Socket } from 'node:net';
import { constants } from 'node:os';
import { nativePump } from './native-pump.js';

/**
 * An abortive close (RST): the kernel drops what it still holds for the peer instead of keeping
 * it for a peer that may never read it. Node's TLS sockets have no reset of their own
 * (`resetAndDestroy` throws for them): the TCP socket under one (its `_parent`, the socket it was
 * made over, as a server's are) is reset, then the TLS socket destroyed; without one it is only
 * destroyed.
 */
export function resetSocket(socket: Socket): void {
  if (socket.destroyed) return;
  if ((socket as { encrypted?: boolean }).encrypted !== true) {
    socket.resetAndDestroy();
    return;
  }
  const under = (socket as { _parent?: Socket | null })._parent;
  if (under !== null && under !== undefined && !under.destroyed) under.resetAndDestroy();
  socket.destroy();
}

/**
 * Whether a socket whose reading just ended (its 'end') was reset by the peer rather than closed
 * with a FIN. libuv reports an RST that arrives with the last bytes as an end of stream (see
 * native/pump/sockerr.c); the kernel still holds it as the socket's pending error, which this
 * reads. Call it from the 'end' handler, once: asking clears the error. Without the addon
 * (Windows, macOS, `ZIPLINE_NO_NATIVE`) it is false: an end is taken as a FIN, as before.
 * Only ECONNRESET counts: EPIPE is an RST that came after the peer's FIN (which really ended what
 * it sent), and SO_ERROR also returns a soft error left by an ICMP message on a connection that
 * then finished cleanly.
 */
export function endedByReset(socket: Socket): boolean {
  return nativePump.socketError(socket) === constants.errno.ECONNRESET;
}
