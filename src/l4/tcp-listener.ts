/**
 * A `protocol: tcp` listener (nginx `stream { proxy_pass }`, HAProxy `mode tcp`): accepts,
 * hands each connection to a `TcpConnection` against the current upstream of that name, logs
 * one access line per connection when it ends.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { hash32 } from '../balancer/hash-fn.js';
import type { TcpListenerConfig } from '../config/schema.js';
import { formatHostPort } from '../config/units.js';
import { ERROR_CATALOG } from '../errors.js';
import { isoNow } from '../log/access-line.js';
import { OverLimit } from '../log/over-limit.js';
import { metrics } from '../metrics/catalog.js';
import { ProxyGate } from '../proxy-protocol/gate.js';
import { clientAddressOf } from '../proxy-protocol/reader.js';
import { compileProxyProtocol, type ProxyProtocolSettings } from '../proxy-protocol/settings.js';
import { acceptPausedReporter } from './accept-guard.js';
import { type ClientAccess, ClientGate, compileClientAccess } from './client-access.js';
import type { L4Context } from './context.js';
import { sweepIdle, sweepPeriod } from './idle-sweep.js';
import { closeListening, keptAliveSocketFromFd, listenOn, onServerError } from './listen.js';
import type { Listener } from './listener.js';
import { nativePump } from './native-pump.js';
import { TcpConnection } from './tcp-connection.js';

export interface TcpListenerSettings {
  readonly upstream: string;
  readonly idleTimeoutMs: number;
  readonly maxConnections: number;
  /** Use the native splice pump when it is available. */
  readonly native: boolean;
  /** `proxy_protocol`: peers whose connections begin with a PROXY header, or null. */
  readonly proxyProtocol: ProxyProtocolSettings | null;
  /** `clients`: the addresses served, or null for everyone. */
  readonly clients: ClientAccess | null;
  /** `limits.max_connections_per_client`; 0: no cap. */
  readonly maxPerClient: number;
}

function compile(cfg: TcpListenerConfig): TcpListenerSettings {
  return Object.freeze({
    upstream: cfg.upstream,
    idleTimeoutMs: cfg.timeouts.client_idle,
    maxConnections: cfg.limits.max_connections,
    native: cfg.native === 'auto',
    proxyProtocol: compileProxyProtocol(cfg.proxy_protocol),
    clients: compileClientAccess(cfg.clients),
    maxPerClient: cfg.limits.max_connections_per_client,
  });
}

export class TcpListener implements Listener {
  readonly protocol = 'tcp' as const;
  readonly name: string;
  source: TcpListenerConfig;
  settings: TcpListenerSettings;
  private readonly server: Server;
  private readonly connections = new Set<TcpConnection>();
  /** `proxy_protocol`: connections from the balancers send a PROXY header first. */
  private readonly proxyGate: ProxyGate;
  private readonly clientGate: ClientGate;
  private readonly overLimit: OverLimit;
  private readonly activeGauge;
  private readonly totalCounter;
  private readonly rxCounter;
  private readonly txCounter;
  private readonly duration;
  private sweepTimer: NodeJS.Timeout | null = null;
  /** The native acceptor draining this listener's queue, if any. */
  private acceptId: number | null = null;
  private sweepEveryMs = 0;

  constructor(
    cfg: TcpListenerConfig,
    name: string,
    private readonly ctx: L4Context,
  ) {
    this.name = name;
    this.source = cfg;
    this.settings = compile(cfg);
    this.activeGauge = metrics.downstreamActive.labels(name);
    this.totalCounter = metrics.downstreamTotal.labels(name);
    this.rxCounter = metrics.downstreamBytes.labels(name, 'rx');
    this.txCounter = metrics.downstreamBytes.labels(name, 'tx');
    this.duration = metrics.sessionDuration.labels(name);
    this.proxyGate = new ProxyGate(name, ctx.log, () => this.settings.proxyProtocol);
    this.clientGate = new ClientGate(name, ctx.log);
    this.overLimit = new OverLimit(name, ctx.log, () => this.settings.maxConnections);
    this.server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true, keepAlive: true });
    this.server.maxConnections = this.settings.maxConnections;
    this.server.on('connection', (socket) => this.onConnection(socket));
    this.server.on('drop', () => this.overLimit.refused());
    onServerError(this.server, (err) => ctx.log.error({ listener: name, err }, 'listener error'));
    this.scheduleSweep();
  }

  async start(): Promise<void> {
    await listenOn(this.server, this.source.listen, this.name, this.ctx.reusePort);
    // drain the accept queue on the native thread: libuv accepts one per loop iteration
    if (this.settings.native)
      this.acceptId = nativePump.acceptOn(
        this.server as never,
        (fd, ip, port) => this.acceptFd(fd, ip, port),
        acceptPausedReporter(this.name, this.ctx.log),
      );
  }

  address(): string {
    const a = this.server.address();
    return a !== null && typeof a === 'object' ? formatHostPort(a.address, a.port) : '';
  }

  update(cfg: TcpListenerConfig): void {
    this.source = cfg;
    this.settings = compile(cfg);
    this.server.maxConnections = this.settings.maxConnections;
    this.scheduleSweep();
  }

  /** `client_idle` by a coarse sweep over the connections' byte counters (see idle-sweep.ts). */
  private scheduleSweep(): void {
    const every = sweepPeriod(this.settings.idleTimeoutMs);
    if (every === this.sweepEveryMs && (this.sweepTimer !== null || every === 0)) return;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    this.sweepEveryMs = every;
    if (every === 0) return;
    this.sweepTimer = setInterval(() => this.sweep(every), every);
    this.sweepTimer.unref();
  }

  private sweep(elapsedMs: number): void {
    const idle = this.settings.idleTimeoutMs;
    if (idle > 0) sweepIdle(this.connections, elapsedMs, idle, expireConnection);
  }

  stopAccepting(): Promise<void> {
    const id = this.acceptId;
    this.acceptId = null;
    // the sweep keeps running for the connections that remain; it is unref'd
    return closeListening(this.server, id);
  }

  activeCount(): number {
    return this.connections.size;
  }

  destroyAll(): void {
    for (const c of this.connections) c.destroy('ZL_DRAIN_TIMEOUT');
    this.proxyGate.destroyAll();
  }

  /** A connection the native thread accepted: paused, as `pauseOnConnect` gives them. */
  private acceptFd(fd: number, ip: string, port: number): void {
    const socket = keptAliveSocketFromFd(fd, true, ip, port);
    if (socket !== null) this.onConnection(socket);
  }

  private onConnection(socket: Socket): void {
    if (this.ctx.draining()) {
      metrics.downstreamRejected.labels(this.name, 'ZL_DRAINING').inc();
      socket.destroy();
      return;
    }
    // both accept paths come here (the native thread's and libuv's, which share the load): one
    // count for the limit; net.Server's own `maxConnections` sees only libuv's connections
    if (this.connections.size >= this.settings.maxConnections) {
      this.overLimit.refused();
      socket.destroy();
      return;
    }
    if (this.proxyGate.applies(socket)) {
      this.proxyGate.read(socket, false, (s, rest) => {
        if (!this.ctx.draining()) this.startConnection(s, Buffer.from(rest));
        else {
          metrics.downstreamRejected.labels(this.name, 'ZL_DRAINING').inc();
          s.destroy();
        }
      });
      return;
    }
    this.startConnection(socket, null);
  }

  /** `early`: bytes that came after a PROXY header (null without one). */
  private startConnection(socket: Socket, early: Buffer | null): void {
    const s = this.settings;
    if (!this.clientGate.admit(socket, s.clients, s.maxPerClient)) return;
    const upstream = this.ctx.upstream(this.settings.upstream);
    if (upstream === undefined) {
      // cannot happen with a validated config; refuse rather than crash
      socket.destroy();
      return;
    }
    this.totalCounter.inc();
    this.activeGauge.inc();
    const conn = new TcpConnection(this, socket, upstream, hash32(clientAddressOf(socket).ip), early);
    this.connections.add(conn);
  }

  onConnectionClosed(conn: TcpConnection): void {
    if (!this.connections.delete(conn)) return;
    if (this.connections.size === 0 && !this.server.listening && this.sweepTimer !== null) {
      clearInterval(this.sweepTimer); // a retired listener's last connection: nothing left to sweep
      this.sweepTimer = null;
    }
    this.activeGauge.dec();
    const seconds = (Date.now() - conn.startedAt) / 1000;
    const bytesIn = conn.bytesIn();
    const bytesOut = conn.bytesOut();
    this.rxCounter.inc(bytesIn);
    this.txCounter.inc(bytesOut);
    this.duration.observe(seconds);
    if (conn.error !== null) metrics.connectionErrors.labels(this.name, conn.error).inc();
    if (this.ctx.accessLog.enabled) {
      this.ctx.accessLog.write({
        time: isoNow(),
        listener: this.name,
        protocol: 'tcp',
        client_ip: conn.clientIp,
        client_port: conn.peer.port,
        status: conn.error === null ? 200 : statusOf(conn.error),
        upstream: this.settings.upstream,
        upstream_addr: conn.endpoint?.address ?? null,
        attempts: conn.attempts,
        data_path: conn.dataPath,
        response_time: seconds,
        bytes_in: bytesIn,
        bytes_out: bytesOut,
        error: conn.error,
      });
    }
  }

  refreshMetrics(): void {
    // TCP byte counters are added when a connection ends (socket.bytesRead/bytesWritten)
  }

  stats(): Record<string, unknown> {
    return {
      protocol: 'tcp',
      address: this.address(),
      upstream: this.settings.upstream,
      active: this.connections.size,
    };
  }
}

/** nginx stream `$status` style: 200 ok, 502/503/504 upstream side, 499/408 client side. */
function statusOf(code: keyof typeof ERROR_CATALOG): number {
  return ERROR_CATALOG[code].status || 500;
}

function expireConnection(conn: TcpConnection): void {
  conn.destroy('ZL_CLIENT_IDLE_TIMEOUT');
}
