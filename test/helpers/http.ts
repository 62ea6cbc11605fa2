/** HTTP test peers: a counting origin (node:http), raw-socket clients, and response parsing. */
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, connect, type Server as NetServer, type Socket } from 'node:net';
import { after, before } from 'node:test';
import { WebSocket } from 'ws';
import { endedByReset } from '../../src/l4/reset-socket.js';
import { closeServer, splitAddress, tcpEcho, tcpServer } from './net.js';

export interface Origin {
  readonly server: Server;
  readonly address: string;
  /** TCP connections accepted so far. */
  connections: number;
  /** Requests seen so far. */
  requests: number;
  close(): Promise<void>;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

/** Echoes method, url, headers and body length as JSON unless a handler answers. */
export const echoHandler: Handler = (req, res, body) => {
  const json = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: body.length });
  res.setHeader('Content-Type', 'application/json');
  res.end(`${json}\n`);
};

export async function startOrigin(
  handler: Handler = echoHandler,
  keepAliveTimeoutMs = 5000,
): Promise<Origin> {
  const server = createServer((req, res) => {
    origin.requests++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, res, Buffer.concat(chunks)));
  });
  server.keepAliveTimeout = keepAliveTimeoutMs;
  const origin: Origin = {
    server,
    address: '',
    connections: 0,
    requests: 0,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  server.on('connection', () => origin.connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const a = server.address();
  (origin as { address: string }).address = typeof a === 'object' && a !== null ? `127.0.0.1:${a.port}` : '';
  return origin;
}

/** An HTTP origin answering "ok" and a TCP echo server, as upstreams `web` and `echo`. */
export interface OkAndEcho {
  readonly origin: Origin;
  readonly echo: NetServer;
  /** The `upstreams:` section naming both. */
  upstreams(): string;
}

/** Starts the two peers before the tests of the calling file (or describe) and stops them after. */
export function okAndEcho(): OkAndEcho {
  let origin: Origin | undefined;
  let echo: NetServer | undefined;
  before(async () => {
    origin = await startOrigin((_req, res) => res.end('ok'));
    echo = await tcpEcho();
  });
  after(async () => {
    await origin?.close();
    if (echo !== undefined) await closeServer(echo);
  });
  const peers: OkAndEcho = {
    get origin(): Origin {
      if (origin === undefined) throw new Error('okAndEcho: used before its before() hook ran');
      return origin;
    },
    get echo(): NetServer {
      if (echo === undefined) throw new Error('okAndEcho: used before its before() hook ran');
      return echo;
    },
    upstreams: () => `
upstreams:
  echo: { servers: [127.0.0.1:${(peers.echo.address() as AddressInfo).port}] }
  web: { servers: [${peers.origin.address}] }`,
  };
  return peers;
}

export interface RawResponse {
  readonly status: number;
  readonly head: string;
  readonly headers: Map<string, string[]>;
  readonly body: Buffer;
  /** A chunked body's trailer section, names lower case (empty for any other body). */
  readonly trailers?: Map<string, string[]>;
}

/** `name: value` lines, names lower case; repeated names in order. */
function fieldMap(lines: string[]): Map<string, string[]> {
  const fields = new Map<string, string[]>();
  for (const l of lines) {
    const i = l.indexOf(':');
    const name = l.slice(0, i).toLowerCase();
    fields.set(name, [...(fields.get(name) ?? []), l.slice(i + 1).trim()]);
  }
  return fields;
}

/** Parses one complete response from `buf` (Content-Length, chunked or close-delimited). */
export function parseResponse(buf: Buffer, method = 'GET'): { resp: RawResponse; rest: Buffer } | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const head = buf.toString('latin1', 0, end);
  const [line = '', ...lines] = head.split('\r\n');
  const status = Number(line.split(' ')[1]);
  const headers = fieldMap(lines);
  let pos = end + 4;
  if (status < 200 || status === 204 || status === 304 || method === 'HEAD') {
    return { resp: { status, head, headers, body: Buffer.alloc(0) }, rest: buf.subarray(pos) };
  }
  const cl = headers.get('content-length')?.[0];
  if (cl !== undefined) {
    const n = Number(cl);
    if (buf.length < pos + n) return null;
    return { resp: { status, head, headers, body: buf.subarray(pos, pos + n) }, rest: buf.subarray(pos + n) };
  }
  if (headers.get('transfer-encoding')?.[0]?.toLowerCase() === 'chunked') {
    const parts: Buffer[] = [];
    for (;;) {
      const eol = buf.indexOf('\r\n', pos);
      if (eol < 0) return null;
      const size = Number.parseInt(buf.toString('latin1', pos, eol), 16);
      if (size === 0) {
        const fin = buf.indexOf('\r\n\r\n', eol);
        if (fin < 0) return null;
        const trailerLines = fin > eol ? buf.toString('latin1', eol + 2, fin).split('\r\n') : [];
        const trailers = fieldMap(trailerLines);
        return {
          resp: { status, head, headers, body: Buffer.concat(parts), trailers },
          rest: buf.subarray(fin + 4),
        };
      }
      if (buf.length < eol + 2 + size + 2) return null;
      parts.push(buf.subarray(eol + 2, eol + 2 + size));
      pos = eol + 2 + size + 2;
    }
  }
  return null; // close-delimited: complete only at close
}

export interface RawResult {
  /** Everything the server sent until it closed (or until the deadline). */
  readonly data: Buffer;
  /** The server closed the connection (FIN or reset) before the deadline. */
  readonly closed: boolean;
  readonly reset: boolean;
}

/**
 * Sends raw bytes, collects what comes back until the server closes, the deadline passes, or
 * (with `complete`) the bytes so far satisfy it.
 */
export function rawRequest(
  address: string,
  bytes: string | Buffer | (string | Buffer)[],
  timeoutMs = 5000,
  complete?: (data: Buffer) => boolean,
): Promise<RawResult> {
  const [host, p] = splitAddress(address);
  return new Promise((resolve) => {
    const s: Socket = connect(p, host);
    const chunks: Buffer[] = [];
    let reset = false;
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ data: Buffer.concat(chunks), closed: false, reset });
    }, timeoutMs);
    s.on('data', (c: Buffer) => {
      chunks.push(c);
      if (complete?.(Buffer.concat(chunks))) {
        clearTimeout(timer);
        s.destroy();
        resolve({ data: Buffer.concat(chunks), closed: false, reset });
      }
    });
    s.on('error', () => {
      reset = true;
    });
    // an RST that came with the last bytes reaches Node as an end (endOf in net.ts)
    s.once('end', () => {
      if (endedByReset(s)) reset = true;
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ data: Buffer.concat(chunks), closed: true, reset });
    });
    const parts = Array.isArray(bytes) ? bytes : [bytes];
    for (const part of parts) s.write(part);
  });
}

/**
 * A keep-alive client on one connection: `send(raw)` resolves with the next complete response.
 */
export class KeepAliveClient {
  private buf = Buffer.alloc(0);
  private waiting: { method: string; resolve: (r: RawResponse) => void; reject: (e: Error) => void }[] = [];
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      this.drain();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiting.splice(0)) w.reject(new Error('connection closed'));
    });
  }

  static open(address: string): Promise<KeepAliveClient> {
    const [host, p] = splitAddress(address);
    return new Promise((resolve, reject) => {
      const s = connect(p, host, () => resolve(new KeepAliveClient(s)));
      s.once('error', reject);
    });
  }

  send(raw: string | Buffer, method = 'GET'): Promise<RawResponse> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ method, resolve, reject });
      this.socket.write(raw);
    });
  }

  private drain(): void {
    for (;;) {
      const w = this.waiting[0];
      if (w === undefined) return;
      const parsed = parseResponse(this.buf, w.method);
      if (parsed === null) return;
      this.buf = Buffer.from(parsed.rest);
      this.waiting.shift();
      w.resolve(parsed.resp);
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

export function get(path: string, host = 'x.test', extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;
}

/**
 * Origins for one test file, closed when the file ends: `peers.origin()` (node:http),
 * `peers.raw(handler)` (a raw TCP origin for misbehaviour; its sockets are destroyed at the end),
 * `peers.defer(fn)` for anything else. Call `peers.cleanup()` from the file's `after`.
 */
export function testPeers() {
  const cleanups: (() => Promise<void> | void)[] = [];
  return {
    async origin(...args: Parameters<typeof startOrigin>): Promise<Origin> {
      const o = await startOrigin(...args);
      cleanups.push(() => o.close());
      return o;
    },
    async raw(handler: (s: Socket) => void): Promise<NetServer> {
      const sockets = new Set<Socket>();
      const s = await tcpServer((socket) => {
        sockets.add(socket);
        handler(socket);
      });
      cleanups.push(() => {
        for (const socket of sockets) socket.destroy();
        return closeServer(s);
      });
      return s;
    },
    defer(fn: () => Promise<void> | void): void {
      cleanups.push(fn);
    },
    async cleanup(): Promise<void> {
      for (const c of cleanups.reverse()) await c();
      cleanups.length = 0;
    },
  };
}

/**
 * A WebSocket client (the `ws` package) to `url`, whose server echoes: sends `count` messages,
 * the i-th `message i` and i × `step` bytes more, waits for every echo, closes, and returns the
 * echoes in order.
 */
export async function webSocketEcho(url: string, count: number, step: number): Promise<string[]> {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const got: string[] = [];
  const all = new Promise<void>((resolve) => {
    ws.on('message', (m) => {
      got.push(m.toString());
      if (got.length === count) resolve();
    });
  });
  for (let i = 0; i < count; i++) ws.send(`message ${i} ${'x'.repeat(i * step)}`);
  await all;
  ws.close();
  await new Promise((r) => ws.once('close', r));
  return got;
}

/**
 * A server's connection cap, tried as a client would: `held` keep-alive connections, each answered
 * once (so the server has accepted and counts them), then one more, which must be closed
 * unanswered. Returns the held clients (the caller closes them) and what the extra one got.
 */
export async function fillToCap(
  address: string,
  held: number,
  path: string,
): Promise<{ clients: KeepAliveClient[]; extra: RawResult }> {
  const clients: KeepAliveClient[] = [];
  for (let i = 0; i < held; i++) {
    const c = await KeepAliveClient.open(address);
    clients.push(c);
    const r = await c.send(get(path));
    if (r.status >= 500) throw new Error(`held connection ${i} answered ${r.status}`);
  }
  return { clients, extra: await rawRequest(address, get(path, 'x.test', 'Connection: close\r\n')) };
}

/**
 * `/debug/profile` left by its client, at admin URL `admin` (`…/`) with `query` (`&worker=1`): a
 * 60 s profile is asked for on a connection of its own, until a second request is refused as busy
 * (it runs), then that client leaves. Resolves with how many more requests were refused before
 * one was served (200), or rejects if none was within `withinMs` (the left profile kept running).
 */
export async function profileAfterLeaving(admin: string, query: string, withinMs = 5000): Promise<number> {
  const url = (seconds: number): string => `${admin}debug/profile?seconds=${seconds}${query}`;
  const [host, p] = splitAddress(new URL(admin).host);
  const left = connect(p, host);
  left.on('error', () => {});
  const ask = get(`/debug/profile?seconds=60${query}`, 'admin');
  let answered = false; // refused as busy, because a profile asked for below was running
  left.on('data', () => {
    answered = true;
  });
  const send = async (): Promise<void> => {
    left.write(ask);
    await (await fetch(`${admin}healthz`)).arrayBuffer(); // a round trip: the ask is in first
  };
  try {
    await new Promise((resolve) => left.once('connect', resolve));
    await send();
    for (;;) {
      if (answered) {
        answered = false;
        await send();
      }
      const r = await fetch(url(1));
      await r.arrayBuffer();
      if (r.status === 409) break;
    }
  } finally {
    left.destroy(); // the client leaves (on a failure above too)
  }
  const deadline = Date.now() + withinMs;
  for (let refused = 0; ; refused++) {
    const r = await fetch(url(1));
    await r.arrayBuffer();
    if (r.status === 200) return refused;
    if (Date.now() > deadline) throw new Error(`still ${r.status} ${withinMs} ms after the client left`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * One GET to `address` (`host:port`) on a connection of its own (no agent): each is accepted anew,
 * so SO_REUSEPORT may pick any worker, and one accepted across an upgrade is one of the test's.
 */
export function getOnce(address: string, path = '/'): Promise<{ status: number; body: string }> {
  const [host, port] = splitAddress(address);
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}
