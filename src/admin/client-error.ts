/**
 * The answer to a request Node's HTTP parser refused, for zipline's own `node:http` servers (the
 * admin API and the `/shm` API): a coded JSON error, `timedOut` (408) when Node's timeouts cut the
 * request short, `bad` (400) when it was malformed, counted in `zipline_connection_errors_total`
 * under `label`; then the connection closes, as nginx's lingering close: what the client still
 * sends is read and dropped until it closes, for `LINGERING_TIMEOUT_MS` at most. A reset peer just goes.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { ERROR_CATALOG, type ErrorCode } from '../errors.js';
import { LINGERING_TIMEOUT_MS, lingeringClose } from '../l4/lingering-close.js';
import { metrics } from '../metrics/catalog.js';

export function answerClientError(
  err: NodeJS.ErrnoException,
  socket: Socket,
  label: string,
  bad: ErrorCode,
  timedOut: ErrorCode,
): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const late = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
  const code = late ? timedOut : bad;
  metrics.connectionErrors.labels(label, code).inc();
  const status = ERROR_CATALOG[code].status;
  const message = late ? 'request not received in time' : 'malformed HTTP request';
  const body = `${JSON.stringify({ error: code, message })}\n`;
  lingeringClose(
    socket,
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\n` +
      `x-zipline-error: ${code}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
    LINGERING_TIMEOUT_MS,
  );
}
