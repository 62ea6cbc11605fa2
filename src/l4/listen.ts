/** Binding a TCP-based listener, and wrapping natively accepted fds, shared by tcp and http listeners. */

import type { Socket as DgramSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { closeSync } from 'node:fs';
import { isIP, type Server, Socket } from 'node:net';
import { parseHostPort } from '../config/units.js';
import { type Bound, inherited, offer, withdraw } from '../core/handover.js';
import { ZiplineError } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import { guardAccepts } from './accept-guard.js';
import { bindFailure } from './bind-failure.js';
import { nativePump } from './native-pump.js';

/** Backlog of every TCP listening socket (capped by net.core.somaxconn). */
const LISTEN_BACKLOG = 4096;

/**
 * Listens on `listen` (`host:port`); rejects with `ZL_LISTEN_FAILED` naming the listener. With
 * `reusePort` (worker processes, Linux) the socket is bound natively with SO_REUSEPORT and handed
 * to the server, so every worker has its own accept queue on the same address.
 */
export async function listenOn(
  server: Server,
  listen: string,
  name: string,
  reusePort = false,
): Promise<void> {
  const hp = parseHostPort(listen);
  if (hp === undefined) throw new Error(`bad listen address ${listen}`);
  const failed = (err: NodeJS.ErrnoException): ZiplineError =>
    new ZiplineError(
      'ZL_LISTEN_FAILED',
      `listener ${name}: cannot listen on ${listen}: ${bindFailure(err, listen)}`,
      {
        cause: err,
      },
    );
  // an upgrade handed this process the old one's socket (core/handover.ts)
  const handed = reusePort ? undefined : inherited('tcp', name, listen);
  let target: { host: string; port: number } | { fd: number } = handed ? { fd: handed.fd } : hp;
  if (reusePort) {
    try {
      target = { fd: (await bindReusePort(hp.host, hp.port, true))[0] };
    } catch (err) {
      throw failed(err as NodeJS.ErrnoException);
    }
  }
  await new Promise<void>((resolve, reject) => {
    // a failed listen closes the handle, and with it a natively bound fd
    const onError = (err: NodeJS.ErrnoException): void => reject(failed(err));
    server.once('error', onError);
    server.listen({ ...target, backlog: LISTEN_BACKLOG }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  // out of descriptors, libuv's accept loop must not spin (accept-guard.ts)
  guardAccepts(server, shedCounter(name));
  if (!reusePort) offerServer(server, name, listen);
}

/** A listening net.Server's socket, for a successor process to take over at an upgrade. */
export function offerServer(server: Server, name: string, listen: string): void {
  offer(server, 'tcp', name, listen, () => {
    // Node's `_handle` (since 0.x): null once the server closed
    const fd = (server as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
    const a = server.address();
    return typeof fd === 'number' && a !== null && typeof a === 'object' ? { fd, port: a.port } : null;
  });
  server.once('close', () => withdraw(server));
}

/**
 * A bound dgram socket's descriptor and port, for an upgrade (core/handover.ts); null once
 * closed. Its handle is in the socket's state (`Symbol('state symbol')`, lib/internal/dgram.js
 * since Node 12; the `_handle` getter is deprecated, DEP0112, and warns).
 */
export function dgramBound(socket: DgramSocket): Bound {
  const key = Object.getOwnPropertySymbols(socket).find((k) => k.description === 'state symbol');
  const state = key === undefined ? undefined : (socket as unknown as Record<symbol, unknown>)[key];
  const fd = (state as { handle?: { fd?: unknown } | null } | undefined)?.handle?.fd;
  if (typeof fd !== 'number') return null;
  try {
    return { fd, port: socket.address().port };
  } catch {
    return null; // not bound
  }
}

/**
 * Closes a listening socket without waiting for its connections (`server.close` alone would):
 * the native acceptor's copy first (`acceptId`; what it accepted meanwhile is still handed over),
 * then the server's. Resolves once it is closed.
 */
export async function closeListening(server: Server, acceptId: number | null): Promise<void> {
  if (acceptId !== null) await nativePump.acceptOff(acceptId);
  await new Promise<void>((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    setImmediate(resolve);
  });
}

/**
 * A listening server's errors after it listens (an accept that failed, as net.Server reports
 * them). A failed listen is not one: `listenOn` rejects with it (ZL_LISTEN_FAILED, what to do) and
 * start reports that, so it is not logged a second time here with a stack.
 */
export function onServerError(server: Server, report: (err: Error) => void): void {
  server.on('error', (err: NodeJS.ErrnoException) => {
    if (err.syscall !== 'listen') report(err);
  });
}

/** Counts a connection closed unanswered because descriptors ran out (a rare path: the series is made then). */
export function shedCounter(listener: string): () => void {
  return () => metrics.downstreamRejected.labels(listener, 'ZL_LOCAL_EXHAUSTED').inc();
}

/**
 * A socket bound (not listening) with SO_REUSEPORT on `host` (an IP, or a name resolved first):
 * `[fd, port]`. Worker processes each bind one per listener; the primary picks port 0 with one.
 * Throws with an errno-like `code`.
 */
export function bindReusePort(host: string, port: number, tcp: boolean): Promise<[number, number]> {
  return bindSocket(host, port, tcp, true);
}

/** A socket bound (not listening) on `host` (an IP, or a name resolved first), SO_REUSEPORT or not. */
export async function bindSocket(
  host: string,
  port: number,
  tcp: boolean,
  reusePort: boolean,
): Promise<[number, number]> {
  const ip = isIP(host) !== 0 ? host : (await lookup(host)).address;
  return nativePump.bindSocket(ip, port, tcp, reusePort);
}

/**
 * A natively accepted connection of a tcp listener or a proxy entry, set up as their net.Server
 * sets up its own (`noDelay`, `keepAlive`); null as `socketFromFd`.
 */
export function keptAliveSocketFromFd(fd: number, paused: boolean, ip: string, port: number): Socket | null {
  const socket = socketFromFd(fd, paused, ip, port);
  socket?.setNoDelay(true);
  socket?.setKeepAlive(true);
  return socket;
}

/**
 * A socket for an fd the native thread accepted (null, fd closed, if Node refuses it). `paused`
 * gives what `pauseOnConnect` gives: nothing is read until the owner resumes it. `ip`/`port`:
 * the peer as accept4() gave it, which the socket reports as its `remoteAddress`/`remotePort`
 * (Node's own cache of getpeername(), `_peername`, since 0.x) — also after the peer reset the
 * connection, when getpeername() fails.
 */
export function socketFromFd(
  fd: number,
  paused: boolean,
  ip: string,
  port: number,
  onread?: { buffer: Buffer; callback: (n: number, buf: Uint8Array) => boolean },
): Socket | null {
  try {
    const opts = {
      fd,
      allowHalfOpen: true,
      readable: true,
      writable: true,
      pauseOnCreate: paused,
      ...(onread === undefined ? {} : { onread }),
    };
    const socket = new Socket(opts as ConstructorParameters<typeof Socket>[0]);
    if (ip !== '') {
      const family = ip.includes(':') ? 'IPv6' : 'IPv4';
      (socket as unknown as { _peername: object })._peername = { address: ip, family, port };
    }
    return socket;
  } catch {
    closeSync(fd);
    return null;
  }
}
