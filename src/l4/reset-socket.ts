/**
 * An abortive close (RST): the kernel drops what it still holds for the peer instead of keeping
 * it for a peer that may never read it. Node's TLS sockets have no reset of their own
 * (`resetAndDestroy` throws for them): the TCP socket under one (its `_parent`, the socket it was
 * made over, as a server's are) is reset, then the TLS socket destroyed; without one it is only
 * destroyed.
 */
import type { Socket } from 'node:net';

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
