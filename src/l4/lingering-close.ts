/**
 * nginx's lingering close, for a connection zipline refuses with an answer: the answer, then FIN;
 * what the peer still sends is read and dropped until it closes, for `lingerMs` at most. Closing
 * at once with unread bytes would reset the connection, and the peer could lose the answer;
 * waiting for a peer that never closes, or reading nothing (a paused socket never sees the FIN;
 * Node's HTTP server sockets stay half-open after theirs), would keep it for ever.
 */
import type { Socket } from 'node:net';

/** How long a refused peer is waited for to close after its answer (nginx `lingering_timeout`). */
export const LINGERING_TIMEOUT_MS = 5_000;

const drop = (): void => {};

export function lingeringClose(socket: Socket, answer: string | Buffer, lingerMs: number): void {
  socket.on('data', drop);
  socket.end(answer);
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), lingerMs);
  socket.once('close', () => clearTimeout(timer));
}
