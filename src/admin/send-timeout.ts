/**
 * nginx's `send_timeout` for zipline's own `node:http` servers (the admin API and the `/shm` API):
 * a response the client takes no byte of for `SEND_TIMEOUT_MS` to twice that (Node compares
 * libuv's write queue with what it was one timeout earlier) resets its connection, counted in
 * `zipline_connection_errors_total` under `label`. Before, a client that asked for more than the
 * socket buffers hold (a CPU profile, a large snapshot, an event stream) and never read kept its
 * connection, one of `max_connections`, and the response's memory until it went.
 *
 * Node's socket timeout is refreshed by each write and each completed write, and is put off while
 * libuv's write queue shrinks (a large write making progress), so a slow reader that keeps taking
 * bytes is not cut. While nothing is waiting to be written (a long poll, a profile being taken)
 * the timeout is put off too: those have their own bounds.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ErrorCode } from '../errors.js';
import { resetSocket } from '../l4/reset-socket.js';
import { metrics } from '../metrics/catalog.js';

/** Half nginx's default `send_timeout` (60 s), for a stalled client closed within 30–60 s. */
export const SEND_TIMEOUT_MS = 30_000;

/**
 * Arms the send timeout for `res` (call as the request is handed over: Node sets the socket's
 * timeout for its keep-alive wait after each response, and clears it for the next request).
 */
export function armSendTimeout(
  req: IncomingMessage,
  res: ServerResponse,
  label: string,
  code: ErrorCode,
  ms: number = SEND_TIMEOUT_MS,
): void {
  const socket = req.socket;
  socket.setTimeout(ms);
  // Node's server emits the socket's timeout on the response it is sending: handled here, Node
  // does not destroy the socket itself
  res.on('timeout', () => {
    if (socket.writableLength === 0) {
      socket.setTimeout(ms);
      return;
    }
    metrics.connectionErrors.labels(label, code).inc();
    // an abortive close: the kernel would otherwise keep what it holds for a peer that takes nothing
    resetSocket(socket);
  });
}
