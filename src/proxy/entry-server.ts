/**
 * A TCP server whose connections are each served by an entry handler (SOCKS5, HTTP proxy, a
 * tunnel forward). It tracks open connections (for drain and leak checks; counted in
 * `zipline_downstream_connections_active` and `_total`, as every listener's), caps them, and
 * reports one result per connection (the access line). Used by the `socks5`/`http_proxy`
 * listeners and by the tunnel agent's entries.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { formatHostPort } from '../config/units.js';
import type { ErrorCode } from '../errors.js';
import { acceptPausedReporter } from '../l4/accept-guard.js';
import { closeListening, keptAliveSocketFromFd, listenOn } from '../l4/listen.js';
import { nativePump } from '../l4/native-pump.js';
import { isoNow } from '../log/access-line.js';
import type { AccessLog, Logger } from '../log/logger.js';
import { metrics } from '../metrics/catalog.js';
import type { ProxyGate } from '../proxy-protocol/gate.js';
import { clientAddressOf } from '../proxy-protocol/reader.js';

/** Timeouts of an entry's handshake and data phase. */
export interface EntryOptions {
  readonly headerTimeoutMs: number;
  readonly idleTimeoutMs: number;
}

/** What an entry reports when its connection ends (an access line). */
export interface EntryResult {
  readonly method: string;
  readonly dest: string;
  /** HTTP-style, as every access line: 200 ok, 403 not allowed, 502 failed, 504 timeout, 400 bad request. */
  readonly status: number;
  /** SOCKS5 / OPEN_ACK reply when there was one. */
  readonly reply?: number;
  /**
   * Bytes from and to the client. Absent: what its connection carried when it closed, handshake
   * and answers included (a refused or unfinished handshake too); a UDP association gives its
   * datagrams' payload bytes instead.
   */
  readonly bytesIn?: number;
  readonly bytesOut?: number;
  readonly error: ErrorCode | 'idle_timeout' | null;
}

/** Counts an entry connection's bytes and error and writes its access line (socks5/http_proxy listeners, agent entries). */
export function reportEntry(
  accessLog: AccessLog,
  listener: string,
  protocol: string,
  peer: { remoteAddress: string; remotePort: number },
  r: EntryResult,
  startedAt: number,
): void {
  const bytesIn = r.bytesIn ?? 0;
  const bytesOut = r.bytesOut ?? 0;
  metrics.downstreamBytes.labels(listener, 'rx').inc(bytesIn);
  metrics.downstreamBytes.labels(listener, 'tx').inc(bytesOut);
  if (r.error !== null) metrics.connectionErrors.labels(listener, r.error).inc();
  if (!accessLog.enabled) return;
  accessLog.write({
    time: isoNow(),
    listener,
    protocol,
    client_ip: peer.remoteAddress,
    client_port: peer.remotePort,
    method: r.method,
    path: r.dest,
    status: r.status,
    ...(r.reply !== undefined ? { reply: r.reply } : {}),
    upstream: null,
    upstream_addr: r.dest,
    attempts: 1,
    response_time: (Date.now() - startedAt) / 1000,
    bytes_in: bytesIn,
    bytes_out: bytesOut,
    error: r.error,
  });
}

export type EntryHandler = (socket: Socket, done: (r: EntryResult) => void) => void;

/** Whether a new connection may be served; a refusing one closes the socket itself. */
export type Admit = (socket: Socket) => boolean;

export interface EntryEvents {
  onResult(socket: { remoteAddress: string; remotePort: number }, r: EntryResult, startedAt: number): void;
  /** Called for a connection refused over the cap or while draining. */
  onRejected(reason: 'over_limit' | 'draining'): void;
}

export class EntryServer {
  private readonly server: Server;
  readonly sockets = new Set<Socket>();
  total = 0;
  private admit: Admit | null = null;
  /** socks5/http_proxy `proxy_protocol`: connections from the balancers begin with a PROXY header. */
  proxyGate: ProxyGate | null = null;
  /** The native acceptor draining this server's queue, if any (Linux with the addon). */
  private acceptId: number | null = null;
  /** Its connections, as every listener's: `zipline_downstream_connections_active` and `_total`. */
  private readonly activeSeries: ReturnType<typeof metrics.downstreamActive.labels>;
  private readonly totalSeries: ReturnType<typeof metrics.downstreamTotal.labels>;

  constructor(
    readonly name: string,
    private handler: EntryHandler,
    private maxConnections: number,
    private readonly events: EntryEvents,
    private readonly draining: () => boolean = () => false,
  ) {
    this.activeSeries = metrics.downstreamActive.labels(name);
    this.totalSeries = metrics.downstreamTotal.labels(name);
    this.server = createServer({ allowHalfOpen: true, noDelay: true, keepAlive: true });
    this.server.on('connection', (s) => this.onConnection(s));
    this.server.on('error', () => {});
  }

  /**
   * `admit`: checked first for each connection; false means it refused (and closed) it itself,
   * and nothing is counted or logged here (socks5/http_proxy `clients`).
   */
  setHandler(handler: EntryHandler, maxConnections: number, admit: Admit | null = null): void {
    this.handler = handler;
    this.maxConnections = maxConnections;
    this.admit = admit;
  }

  /** A reload's cap: connections beyond it from now on are refused (open ones stay). */
  setMaxConnections(maxConnections: number): void {
    this.maxConnections = maxConnections;
  }

  /**
   * Listens. `nativeAccept`, where the addon is built: the native thread accepts beside libuv, as
   * for tcp and http listeners (native/pump/accept.c): a burst is taken at once, and each
   * connection comes with its peer's address from accept4(), which a client that reset at once
   * no longer has by the time JavaScript asks.
   */
  async listen(address: string, log: Logger, nativeAccept: boolean, reusePort = false): Promise<void> {
    await listenOn(this.server, address, this.name, reusePort);
    if (!nativeAccept) return;
    this.acceptId = nativePump.acceptOn(
      this.server as never,
      (fd, ip, port) => this.acceptFd(fd, ip, port),
      acceptPausedReporter(this.name, log),
    );
  }

  private acceptFd(fd: number, ip: string, port: number): void {
    const socket = keptAliveSocketFromFd(fd, false, ip, port);
    if (socket !== null) this.onConnection(socket);
  }

  address(): string {
    const a = this.server.address();
    return a !== null && typeof a === 'object' ? formatHostPort(a.address, a.port) : '';
  }

  private onConnection(socket: Socket): void {
    if (this.draining()) {
      this.events.onRejected('draining');
      socket.destroy();
      return;
    }
    const gate = this.proxyGate;
    if (gate?.applies(socket) === true) {
      // behind a balancer: its PROXY header names the client (access line, `clients`, lookups)
      gate.read(socket, false, (s, rest) => {
        if (this.draining()) {
          this.events.onRejected('draining');
          s.destroy();
          return;
        }
        if (rest.length > 0) s.unshift(Buffer.from(rest));
        this.accept(s);
        s.resume(); // the header reader stopped it; the handler is listening now
      });
      return;
    }
    this.accept(socket);
  }

  private accept(socket: Socket): void {
    if (this.admit !== null && !this.admit(socket)) return;
    if (this.sockets.size >= this.maxConnections) {
      this.events.onRejected('over_limit');
      socket.destroy();
      return;
    }
    this.total++;
    this.activeSeries.inc();
    this.totalSeries.inc();
    this.sockets.add(socket);
    const client = clientAddressOf(socket); // a PROXY header's, if one was read
    const peer = { remoteAddress: client.ip, remotePort: client.port };
    const startedAt = Date.now();
    let reported = false;
    let closed = false;
    let pending: EntryResult | null = null;
    const finish = (): void => {
      if (reported || pending === null || !closed) return;
      reported = true;
      this.activeSeries.dec();
      const r: EntryResult = pending;
      const bytes = { bytesIn: r.bytesIn ?? socket.bytesRead, bytesOut: r.bytesOut ?? socket.bytesWritten };
      this.events.onResult(peer, { ...r, ...bytes }, startedAt);
    };
    socket.once('close', () => {
      this.sockets.delete(socket);
      closed = true;
      finish();
    });
    socket.on('error', () => {});
    this.handler(socket, (r) => {
      pending ??= r;
      finish();
    });
  }

  /** Stops accepting; open connections continue. */
  stop(): Promise<void> {
    const id = this.acceptId;
    this.acceptId = null;
    return closeListening(this.server, id);
  }

  destroyAll(): void {
    for (const s of this.sockets) s.destroy();
    this.proxyGate?.destroyAll();
  }
}
