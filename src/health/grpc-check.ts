/**
 * `health_check.type: grpc`: the gRPC health checking protocol (grpc.health.v1, as Envoy's
 * `grpc_health_check` and Kubernetes' gRPC probes): a unary `Health/Check` call for `service`
 * ('' is the whole server) over HTTP/2 (h2c, or TLS with ALPN `h2` with the upstream's `tls`).
 * It passes when the call ends with `grpc-status: 0` and the answer says `SERVING`; a server
 * without the health service fails with its status (`grpc-status 12`: UNIMPLEMENTED). The
 * connection is the check's own and is closed after each check, within `timeout`.
 */
import type { ClientHttp2Session } from 'node:http2';
import { connect, type Socket } from 'node:net';
import { connect as connectTls } from 'node:tls';
import { loadHttp2 } from '../http/http2-module.js';
import { localProxyHeader } from '../proxy-protocol/header.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { HealthSettings } from '../upstream/settings.js';

const PATH = '/grpc.health.v1.Health/Check';
/** HealthCheckResponse.ServingStatus names, by number. */
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];
/** An answer is a few bytes; more is not a health service's. */
const MAX_ANSWER = 1024;

export function checkGrpc(e: Endpoint, s: HealthSettings, done: (error: string | null) => void): void {
  let finished = false;
  let session: ClientHttp2Session | null = null;
  const plain: Socket = connect({ host: e.ip, port: e.port });
  const finish = (error: string | null): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    if (session !== null) session.destroy();
    plain.destroy();
    done(error);
  };
  const timer = setTimeout(finish, s.timeoutMs, 'timeout');
  plain.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
  // `send_proxy`: the check is zipline's own connection (v1 UNKNOWN, v2 LOCAL), before TLS
  if (s.sendProxy !== 0) plain.write(localProxyHeader(s.sendProxy));
  const socket =
    s.tls === null ? plain : connectTls({ ...s.tls.connectOptions(e), ALPNProtocols: ['h2'], socket: plain });
  if (socket !== plain) socket.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
  const http2 = loadHttp2();
  session = http2.connect(`${s.tls === null ? 'http' : 'https'}://${e.address}`, {
    createConnection: () => socket,
  });
  session.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
  const call = session.request({
    ':method': 'POST',
    ':path': PATH,
    ':authority': s.host ?? e.server,
    'content-type': 'application/grpc',
    te: 'trailers',
  });
  call.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
  let status: string | undefined;
  let httpStatus = 0;
  const chunks: Buffer[] = [];
  let bytes = 0;
  call.on('response', (h) => {
    httpStatus = Number(h[':status']);
    status = h['grpc-status'] as string | undefined; // a trailers-only answer
  });
  call.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes > MAX_ANSWER) finish('not a gRPC health answer (too long)');
    else chunks.push(chunk);
  });
  call.on('trailers', (t) => {
    status = t['grpc-status'] as string | undefined;
  });
  call.on('end', () => finish(verdict(httpStatus, status, Buffer.concat(chunks))));
  call.end(requestMessage(s.service));
}

/** The length-prefixed HealthCheckRequest `{ service = 1 }` (empty for the whole server). */
function requestMessage(service: string): Buffer {
  const name = Buffer.from(service, 'utf8');
  const body =
    name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(name.length), name]);
  const frame = Buffer.alloc(5);
  frame.writeUInt32BE(body.length, 1);
  return Buffer.concat([frame, body]);
}

function verdict(httpStatus: number, grpcStatus: string | undefined, answer: Buffer): string | null {
  if (httpStatus !== 200) return `status ${httpStatus}`;
  if (grpcStatus !== '0') return `grpc-status ${grpcStatus ?? 'missing'}`;
  if (answer.length < 5 || answer[0] !== 0 || answer.readUInt32BE(1) !== answer.length - 5) {
    return 'not a gRPC health answer';
  }
  const serving = servingStatus(answer.subarray(5));
  if (serving === null) return 'not a gRPC health answer';
  return serving === 1 ? null : (SERVING_STATUS[serving] ?? `serving status ${serving}`);
}

/** Field 1 (a varint) of a HealthCheckResponse; 0 when absent; null when the bytes are not protobuf. */
function servingStatus(msg: Buffer): number | null {
  let i = 0;
  let status = 0;
  while (i < msg.length) {
    const key = readVarint(msg, i);
    if (key === null) return null;
    i = key.next;
    const wire = key.value & 7;
    if (wire === 0) {
      const v = readVarint(msg, i);
      if (v === null) return null;
      if (key.value >>> 3 === 1) status = v.value;
      i = v.next;
    } else if (wire === 2) {
      const len = readVarint(msg, i);
      if (len === null) return null;
      i = len.next + len.value;
    } else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else return null;
  }
  return i === msg.length ? status : null;
}

function readVarint(buf: Buffer, at: number): { value: number; next: number } | null {
  let value = 0;
  for (let i = at, shift = 0; i < buf.length && shift < 35; i++, shift += 7) {
    const b = buf[i] as number;
    value += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) return { value, next: i + 1 };
  }
  return null;
}

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}
