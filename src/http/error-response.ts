/**
 * zipline's own answer on an HTTP/1 connection for an error code: the catalog's status, a
 * one-line text body naming the code (and, for a few, what to do about it), `X-Zipline-Error`,
 * and `Connection: close` unless the connection stays open.
 */
import { STATUS_CODES } from 'node:http';
import { ERROR_CATALOG, type ErrorCode } from '../errors.js';
import { lastRetryAfter } from './rate-limit.js';

export interface ErrorResponseOptions {
  readonly keepAlive: boolean;
  readonly requestId: string | null;
  /** false for a HEAD request: the head only */
  readonly withBody: boolean;
  readonly detail?: string;
}

export function errorResponse(code: ErrorCode, o: ErrorResponseOptions): string {
  // 499 is a log-only status: nobody is there to read it
  const status = ERROR_CATALOG[code].status || 500;
  const reason = STATUS_CODES[status] ?? 'Error';
  const body = `${status} ${reason} (${code})${o.detail === undefined ? '' : `: ${o.detail}`}\n`;
  let head =
    `HTTP/1.1 ${status} ${reason}\r\n` +
    `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\n` +
    `X-Zipline-Error: ${code}\r\n`;
  if (o.requestId !== null) head += `X-Request-Id: ${o.requestId}\r\n`;
  if (code === 'ZL_HTTP_RATE_LIMITED') head += `Retry-After: ${lastRetryAfter()}\r\n`;
  if (!o.keepAlive) head += 'Connection: close\r\n';
  return o.withBody ? `${head}\r\n${body}` : `${head}\r\n`;
}
