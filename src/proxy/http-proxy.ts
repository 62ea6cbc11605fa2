/**
 * An HTTP forward proxy for one client connection: `CONNECT host:port` (then a raw two-way
 * pipe) and absolute-form requests (`GET http://host:port/path`, then the request goes to the
 * origin in origin-form with `Connection: close`; the client connection closes after the
 * response, so one proxied request per connection, as Squid does without persistent server
 * connections). The head is parsed by zipline's strict HTTP/1.1 parser (smuggling defences).
 * Failures: 403 not allowed, 504 timeout, 503 the relay at its stream limit, 502 the rest, with
 * `X-Zipline-Error`.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { parseHostPort } from '../config/units.js';
import { type ErrorCode, isZiplineError } from '../errors.js';
import { connectionOptions } from '../http/parser/connection-options.js';
import { parseRequestHead, type RequestHead, requestHeadEnd } from '../http/parser/request-head.js';
import { lowerAscii } from '../http/parser/tokens.js';
import { type Destination, formatDestination } from '../tunnel/address.js';
import { OPEN_STATUS } from '../tunnel/constants.js';
import { type Dialer, statusOf } from './dialer.js';
import type { EntryOptions, EntryResult } from './entry-server.js';
import { HandshakeReader, handshakeFailure, lingerFor, type ParseStep } from './handshake-reader.js';
import { pipeStream } from './pipe.js';

const MAX_HEAD = 16 * 1024;

/** Fields that describe the hop to the proxy, never forwarded. */
const HOP = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'upgrade',
]);

function parseHead(b: Buffer): ParseStep<RequestHead> {
  const end = requestHeadEnd(b, MAX_HEAD);
  if (end < 0) return { need: true };
  return { done: parseRequestHead(b, end), used: end };
}

function answer(status: number, reason: string, code: string | null): string {
  const body = `${status} ${reason}\n`;
  return (
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n` +
    `${code !== null ? `X-Zipline-Error: ${code}\r\n` : ''}Connection: close\r\n\r\n${body}`
  );
}

function statusForDial(openStatus: number): [number, string] {
  if (openStatus === OPEN_STATUS.NOT_ALLOWED) return [403, 'Forbidden'];
  if (openStatus === OPEN_STATUS.TIMEOUT) return [504, 'Gateway Timeout'];
  return [502, 'Bad Gateway'];
}

/** `http://host[:port]/path?q` → destination and origin-form target; null when not http://. */
function absoluteTarget(target: string): { dest: Destination; path: string } | null {
  const m = /^http:\/\/([^/?#@]+)([/?][^#]*)?$/i.exec(target);
  if (m === null) return null;
  const authority = m[1] as string;
  const hp = parseHostPort(/:\d+$/.test(authority) ? authority : `${authority}:80`);
  if (hp === undefined) return null;
  const path = m[2] === undefined ? '/' : m[2].startsWith('?') ? `/${m[2]}` : m[2];
  return { dest: { host: hp.host, port: hp.port }, path };
}

/** The request head for the origin: origin-form, hop-by-hop fields dropped, `Connection: close`. */
function originHead(head: RequestHead, path: string): Buffer {
  let named: Set<string> | null = null;
  const lines: string[] = [`${head.method} ${path} HTTP/1.1`];
  for (let f = 0; f < head.fieldCount; f++) {
    const k = f * 4;
    const name = lowerAscii(head.raw, head.fields[k] as number, head.fields[k + 1] as number);
    if (name === 'connection' || name === 'proxy-connection') {
      named = connectionOptions(
        head.raw.toString('latin1', head.fields[k + 2] as number, head.fields[k + 3] as number),
        named,
      );
    }
  }
  for (let f = 0; f < head.fieldCount; f++) {
    const k = f * 4;
    const name = lowerAscii(head.raw, head.fields[k] as number, head.fields[k + 1] as number);
    if (HOP.has(name) || named?.has(name)) continue;
    lines.push(head.raw.toString('latin1', head.fields[k] as number, head.fields[k + 3] as number));
  }
  lines.push('Connection: close', '', '');
  return Buffer.from(lines.join('\r\n'), 'latin1');
}

export async function serveHttpProxy(
  socket: Socket,
  dialer: Dialer,
  opts: EntryOptions,
  done: (r: EntryResult) => void,
): Promise<void> {
  const reader = new HandshakeReader(socket, MAX_HEAD);
  let timedOut = false;
  // a client too slow to send its head is answered and closed (the read below then fails); 0: no limit
  const timer =
    opts.headerTimeoutMs > 0
      ? setTimeout(() => {
          timedOut = true;
          socket.end(answer(408, 'Request Timeout', 'ZL_HTTP_HEADER_TIMEOUT'));
          socket.destroySoon();
        }, opts.headerTimeoutMs)
      : undefined;
  socket.on('error', () => {});
  let result: EntryResult = { method: '', dest: '', status: 0, error: null };
  const fail = (status: number, reason: string, code: ErrorCode): void => {
    clearTimeout(timer);
    reader.refuse(answer(status, reason, code), lingerFor(opts));
    done({ ...result, status, error: code });
  };
  let head: RequestHead;
  try {
    head = await reader.read(parseHead);
  } catch (err) {
    if (isZiplineError(err)) {
      const status = err.status === 0 ? 400 : err.status;
      fail(status, STATUS_CODES[status] ?? 'Bad Request', 'ZL_PROXY_BAD_REQUEST');
    } else {
      clearTimeout(timer);
      socket.destroy();
      done(handshakeFailure(result, err, timedOut));
    }
    return;
  }
  clearTimeout(timer); // the head is in; dialing has its own timeout
  result = { ...result, method: head.method };
  let dest: Destination;
  let forward: Buffer | null = null;
  if (head.method === 'CONNECT') {
    const hp = parseHostPort(head.target);
    if (hp === undefined || hp.port === 0) {
      fail(400, 'Bad Request', 'ZL_PROXY_BAD_REQUEST');
      return;
    }
    dest = { host: hp.host, port: hp.port };
  } else {
    const abs = absoluteTarget(head.target);
    if (abs === null || head.upgrade !== null) {
      // origin-form to a proxy, https:// (use CONNECT), or an upgrade: not for a forward proxy
      fail(400, 'Bad Request', 'ZL_PROXY_BAD_REQUEST');
      return;
    }
    dest = abs.dest;
    forward = originHead(head, abs.path);
  }
  result = { ...result, dest: formatDestination(dest) };
  let far: Awaited<ReturnType<Dialer['connectTcp']>>;
  try {
    far = await dialer.connectTcp(dest);
  } catch (err) {
    const code = isZiplineError(err) ? err.code : 'ZL_TUNNEL_DIAL_FAILED';
    // the relay at its stream limit is a load refusal (nginx limit_conn: 503), not a bad gateway
    const [status, reason] =
      code === 'ZL_TUNNEL_LIMIT' ? [503, 'Service Unavailable'] : statusForDial(statusOf(err));
    fail(status, reason, code);
    return;
  }
  clearTimeout(timer);
  if (socket.destroyed) {
    far.destroy();
    done({ ...result, status: 499, error: 'ZL_CLIENT_ABORTED' });
    return;
  }
  const early = reader.detach();
  if (forward === null) socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
  else far.write(forward);
  if (early.length > 0) far.write(early);
  pipeStream(far, socket, opts.idleTimeoutMs, (r) =>
    done({
      ...result,
      status: 200,
      bytesIn: r.fromSocket, // the early bytes were read from the socket: already counted
      bytesOut: r.toSocket,
      error: r.error,
    }),
  );
}
