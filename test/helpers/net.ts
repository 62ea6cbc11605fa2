/** Socket helpers for tests: fake upstreams that behave and misbehave, and small clients. */
import { spawnSync } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { nativePump } from '../../src/l4/native-pump.js';
import { endedByReset } from '../../src/l4/reset-socket.js';

export function port(server: Server | UdpSocket): number {
  return (server.address() as AddressInfo).port;
}

export async function listen(server: Server, host = '127.0.0.1'): Promise<Server> {
  server.listen(0, host);
  await once(server, 'listening');
  return server;
}

export function tcpEcho(): Promise<Server> {
  return listen(
    createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => s.destroy());
      s.pipe(s);
    }),
  );
}

/**
 * A port on which nothing listens (connections are refused), also free for a daemon a test
 * starts there. It is taken below the kernel's ephemeral range, where `listen(0)` and a
 * client's source port never land: a port freed inside the range could next be given to the
 * listener of the zipline under test (which then proxies to itself until its connection limit:
 * `ZL_UPSTREAM_OVER_LIMIT` where the test expected a refusal), to another test's server, or
 * be the source port of a connection to it (a TCP self-connect).
 */
export async function refusedPort(): Promise<number> {
  const low = ephemeralLow();
  if (low > 10_000) {
    for (let i = 0; i < 100; i++) {
      const p = 10_000 + Math.floor(Math.random() * (low - 10_000));
      if (await refuses(p)) return p;
    }
  }
  // elsewhere: a port freed inside the range (the kernel may give it out again)
  const s = await listen(createServer());
  const p = port(s);
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

/** The first port of the kernel's ephemeral range (Linux; 0 when unknown). */
function ephemeralLow(): number {
  try {
    return (
      Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'latin1').trim().split(/\s+/)[0]) || 0
    );
  } catch {
    return 0;
  }
}

/** A connection to 127.0.0.1:`p` is refused (nothing listens there). */
function refuses(p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect({ host: '127.0.0.1', port: p });
    c.once('connect', () => {
      c.destroy();
      resolve(false);
    });
    c.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

/** A server whose handler is given each socket (for custom misbehaviour). */
export function tcpServer(handler: (s: Socket) => void): Promise<Server> {
  return listen(
    createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => s.destroy());
      handler(s);
    }),
  );
}

export function closeServer(s: Server): Promise<void> {
  return new Promise((r) => {
    s.close(() => r());
  });
}

/** Connects and resolves once connected. */
export async function dial(address: string): Promise<Socket> {
  const [host, p] = splitAddress(address);
  const s = connect({ host, port: p, allowHalfOpen: true });
  await once(s, 'connect');
  return s;
}

export function splitAddress(address: string): [string, number] {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), Number(address.slice(i + 1))];
}

/** Reads everything until the peer's FIN; rejects on error. */
export function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

/**
 * Resolves with the error (or null) when the socket closes. A FIN from the peer is answered with
 * ours, as an ordinary client would (test sockets are half-open capable).
 */
export function closed(s: Socket): Promise<NodeJS.ErrnoException | null> {
  return new Promise((resolve) => {
    let error: NodeJS.ErrnoException | null = null;
    s.once('end', () => s.end());
    if (s.readableFlowing !== true) s.resume();
    s.on('error', (e: NodeJS.ErrnoException) => {
      error = e;
    });
    s.once('close', () => resolve(error));
  });
}

/**
 * How the peer ended `s`, and what it sent first. libuv reports an RST that arrives with the last
 * bytes as an end of stream, as it does a FIN, so an 'end' is checked against the kernel's pending
 * socket error (`endedByReset`); tests that tell the two apart skip without the addon
 * (`RESETS_TOLD`).
 */
export function endOf(s: Socket): Promise<{ kind: 'fin' | 'reset'; data: Buffer }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let kind: 'fin' | 'reset' = 'reset';
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => {
      kind = endedByReset(s) ? 'reset' : 'fin';
      s.end();
    });
    s.on('error', () => {
      kind = 'reset';
    });
    s.once('close', () => resolve({ kind, data: Buffer.concat(chunks) }));
  });
}

/** Whether `endOf` can tell an RST from a FIN here (Linux with the native addon). */
export const RESETS_TOLD = nativePump.available;

export function udpEcho(): Promise<UdpSocket> {
  const s = createSocket('udp4');
  s.on('message', (m, r) => s.send(m, r.port, r.address));
  return new Promise((resolve) => s.bind(0, '127.0.0.1', () => resolve(s)));
}

/**
 * A UDP port that answers every datagram with ICMP port unreachable, and stays so while held: a
 * socket bound to it and connected elsewhere (to port 9) keeps other sockets off the port but
 * matches no datagram from anyone else. (A port merely found free could be taken meanwhile by a
 * test running beside this one, which would then swallow the datagrams.)
 */
export async function unreachableUdpPort(): Promise<{ port: number; release: () => void }> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', () => resolve()));
  await new Promise<void>((resolve) => s.connect(9, '127.0.0.1', () => resolve()));
  return { port: s.address().port, release: () => s.close() };
}

export function udpClient(): Promise<UdpSocket> {
  const s = createSocket('udp4');
  return new Promise((resolve) => s.bind(0, '127.0.0.1', () => resolve(s)));
}

/**
 * The most the kernel may buffer for one TCP socket pair direction on loopback: the largest
 * receive buffer autotuning may grow to plus the largest send buffer (Linux `tcp_rmem`/`tcp_wmem`
 * maxima; common defaults elsewhere). Bytes in flight beyond the kernel's share are the proxy's.
 */
export function kernelTcpBufferMax(): number {
  const max = (file: string, fallback: number): number => {
    try {
      const v = Number(readFileSync(file, 'utf8').trim().split(/\s+/)[2]);
      return Number.isFinite(v) && v > 0 ? v : fallback;
    } catch {
      return fallback;
    }
  };
  return (
    max('/proc/sys/net/ipv4/tcp_rmem', 6 * 1024 * 1024) + max('/proc/sys/net/ipv4/tcp_wmem', 4 * 1024 * 1024)
  );
}

/**
 * Both ends of one loopback TCP connection, half-open capable: [the side that connected, the side
 * that was accepted]. The server stops listening at once (the connection stays).
 */
export async function socketPair(): Promise<[Socket, Socket]> {
  const server = createServer({ allowHalfOpen: true });
  await listen(server);
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = connect({ port: port(server), host: '127.0.0.1', allowHalfOpen: true });
  await once(client, 'connect');
  const [sock] = await accepted;
  server.close();
  return [client, sock];
}

export function openFds(pid: number | 'self' = 'self'): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/**
 * Waits until `check()` is truthy, re-checking every `everyMs`. For states that change through
 * timers inside the system under test (health checks, expiries); fails with `what` at the deadline.
 */
export async function until<T>(
  check: () => T | Promise<T>,
  what: string,
  timeoutMs = 10_000,
  everyMs = 20,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Child script: connects N clients to host:port, resets each as it connects, prints their ports. */
const RESET_AT_ONCE = `
const net = require('node:net');
const [host, port, n] = process.argv.slice(1);
const ports = [];
for (let i = 0; i < Number(n); i++) {
  const s = net.connect(Number(port), host, () => {
    ports.push(s.localPort);
    s.resetAndDestroy();
    if (ports.length === Number(n)) console.log(ports.join(' '));
  });
  s.on('error', (err) => { console.error(err.message); process.exit(1); });
}`;

/**
 * `n` clients that connect to `host:port` and reset at once, from a child process run while this
 * process's event loop is blocked: a native acceptor (native/pump/accept.c) in this process
 * accepts every connection meanwhile, and each has been reset before JavaScript sees it. Returns
 * the clients' ports, sorted.
 */
export function resetAtOnceBlocking(host: string, port: number, n: number): number[] {
  const child = spawnSync(process.execPath, ['-e', RESET_AT_ONCE, host, String(port), String(n)], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  if (child.status !== 0) throw new Error(`the resetting clients failed: ${child.stderr}`);
  const ports = child.stdout.trim().split(/\s+/).map(Number);
  if (ports.length !== n) throw new Error(`${ports.length} of ${n} clients connected`);
  return ports.sort((a, b) => a - b);
}
