/**
 * A `protocol: http` or `https` listener (nginx `server { proxy_pass }`, Caddy `reverse_proxy`):
 * accepts, terminates TLS (https), serves HTTP/1.1 on raw sockets (`ClientConnection`) or HTTP/2
 * for clients that chose `h2` by ALPN (`h2.ts`), and proxies each request through an `Exchange`.
 * It owns the timeouts sweep of its connections, the per-request metrics and the access log.
 */

import type { Http2Session } from 'node:http2';
import { createServer, type Server, Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from 'node:tls';
import { getSystemErrorName } from 'node:util';
import type { HttpListenerConfig } from '../config/schema.js';
import { formatHostPort, parseHostPort } from '../config/units.js';
import type { ErrorCode } from '../errors.js';
import { acceptPausedReporter, guardAccepts } from '../l4/accept-guard.js';
import { ClientGate } from '../l4/client-access.js';
import type { L4Context } from '../l4/context.js';
import { closeListening, listenOn, onServerError, shedCounter, socketFromFd } from '../l4/listen.js';
import type { Listener } from '../l4/listener.js';
import { nativePump } from '../l4/native-pump.js';
import { OverLimit } from '../log/over-limit.js';
import { metrics } from '../metrics/catalog.js';
import { ScrapedGauge } from '../metrics/scraped-gauge.js';
import { ProxyGate } from '../proxy-protocol/gate.js';
import type { Upstream } from '../upstream/upstream.js';
import type { Routed } from './admission.js';
import { ClientConnection } from './client-connection.js';
import { type ClientReads, sharedReads } from './client-reads.js';
import { errorResponse } from './error-response.js';
import type { ExchangeHost } from './exchange-host.js';
import { H2Front } from './h2.js';
import type { RequestHead } from './parser/request-head.js';
import type { ProxyExchange } from './proxy-exchange.js';
import { realIpWarning, requestClientIp } from './real-ip.js';
import { type LocalPeer, RequestLog } from './request-log.js';
import { compileHttpListener, type HttpListenerSettings, h2HeadWarning } from './settings.js';
import { TlsState } from './tls.js';
import { bytesWritten, directWritesAvailable, prepareWrites } from './write-batch.js';

export class HttpListener implements Listener, ExchangeHost {
  readonly protocol: 'http' | 'https';
  readonly name: string;
  source: HttpListenerConfig;
  settings: HttpListenerSettings;
  private readonly server: Server | TlsServer;
  readonly connections = new Set<ClientConnection>();
  private h2: H2Front | null;
  private tls: TlsState | null = null;
  /** `proxy_protocol`: connections from the balancers send a PROXY header first. */
  private readonly proxyGate: ProxyGate;
  private readonly clientGate: ClientGate;
  private readonly overLimit: OverLimit;
  private sweepTimer: NodeJS.Timeout | null = null;
  private sweepEveryMs = 0;
  /** `zipline_requests_active` and `zipline_downstream_connections_active`. */
  private readonly requestsGauge: ScrapedGauge;
  private readonly connectionsGauge: ScrapedGauge;
  private readonly totalCounter;
  /** `zipline_downstream_bytes_total`, added as each client socket closes. */
  private readonly rxBytes;
  private readonly txBytes;
  /** The native acceptor draining this listener's queue, if any. */
  private acceptId: number | null = null;
  private stopped = false; // stopped accepting (retired by a reload, or draining)
  private socketClosed: Promise<void> | null = null;
  private activeRequests = 0;
  /** Metrics, /stats counts and access lines of the requests answered. */
  readonly requests: RequestLog;

  constructor(
    cfg: HttpListenerConfig,
    name: string,
    readonly ctx: L4Context,
  ) {
    this.protocol = cfg.protocol;
    this.name = name;
    this.requests = new RequestLog(name, cfg.protocol, () => ctx.accessLog);
    this.source = cfg;
    this.settings = compileHttpListener(cfg);
    this.requestsGauge = new ScrapedGauge(metrics.requestsActive.labels(name));
    this.connectionsGauge = new ScrapedGauge(metrics.downstreamActive.labels(name));
    this.totalCounter = metrics.downstreamTotal.labels(name);
    this.rxBytes = metrics.downstreamBytes.labels(name, 'rx');
    this.txBytes = metrics.downstreamBytes.labels(name, 'tx');
    this.proxyGate = new ProxyGate(name, ctx.log, () => this.settings.proxyProtocol);
    this.clientGate = new ClientGate(name, ctx.log);
    this.overLimit = new OverLimit(name, ctx.log, () => this.settings.maxConnections);
    const onSocket = (socket: Socket): void => this.onConnection(socket);
    if (cfg.protocol === 'https' && cfg.tls !== undefined) {
      this.tls = new TlsState(cfg.tls);
      const tls = createTlsServer({
        ...this.tls.options(cfg.tls, this.settings.clientHeaderMs),
        allowHalfOpen: true,
      } as Parameters<typeof createTlsServer>[0]);
      tls.on('secureConnection', (socket: TLSSocket) => {
        socket.setNoDelay(true);
        if (socket.alpnProtocol === 'h2') this.h2?.accept(socket);
        else onSocket(socket);
      });
      tls.on('tlsClientError', (err, socket) => {
        if (!this.answerPlainHttp(err, socket)) metrics.httpErrors.labels(name, 'ZL_HTTP_BAD_REQUEST').inc();
        socket.destroy();
      });
      this.server = tls;
      this.h2 = new H2Front(this);
      this.admitBeforeTls(tls);
      this.proxyGate.beforeTls(tls); // runs first: `clients` sees the PROXY header's address
    } else {
      this.server = createServer({ allowHalfOpen: true, noDelay: true }, onSocket);
      this.h2 = null;
    }
    this.server.maxConnections = this.settings.maxConnections;
    this.server.on('drop', () => this.overLimit.refused());
    onServerError(this.server, (err) => ctx.log.error({ listener: name, err }, 'listener error'));
    this.scheduleSweep();
  }

  // ---- Listener ---------------------------------------------------------------------------------

  async start(): Promise<void> {
    await listenOn(this.server, this.source.listen, this.name, this.ctx.reusePort);
    this.warnAbout(this.source, null);
    if (this.protocol === 'http') this.adoptLibuvAccepts();
    if (this.source.native === 'auto') {
      this.acceptId = nativePump.acceptOn(
        this.server as never,
        (fd, ip, port) => this.acceptFd(fd, ip, port),
        acceptPausedReporter(this.name, this.ctx.log),
      );
    }
  }

  address(): string {
    const a = this.server.address();
    return a !== null && typeof a === 'object' ? formatHostPort(a.address, a.port) : '';
  }

  filesChanged(): boolean {
    return this.tls?.filesChanged() ?? false;
  }

  update(cfg: HttpListenerConfig): void {
    const next = compileHttpListener(cfg, this.settings);
    if (cfg.tls !== undefined && this.tls !== null && 'setSecureContext' in this.server) {
      // new certificates for new handshakes; throws ZL_TLS_CONFIG (the reload reports it)
      this.server.setSecureContext(this.tls.reload(cfg.tls));
    }
    const previous = this.source;
    this.source = cfg;
    this.settings = next;
    this.server.maxConnections = next.maxConnections;
    this.scheduleSweep();
    this.warnAbout(cfg, previous);
  }

  /** Warnings about settings that make this listener easy to misuse: at start, and on a reload that brings one. */
  private warnAbout(cfg: HttpListenerConfig, previous: HttpListenerConfig | null): void {
    const said = previous === null ? [] : warningsFor(previous, this.address());
    for (const warning of warningsFor(cfg, this.address())) {
      if (!said.includes(warning))
        this.ctx.log.warn({ listener: this.name, address: this.address() }, warning);
    }
  }

  async stopAccepting(): Promise<void> {
    await this.closeSocket();
    // `Connection: close` only now: no reconnect it brings may queue on a socket closing (SO_REUSEPORT)
    this.stopped = true;
    for (const c of this.connections) c.closeIfIdle();
    this.h2?.closeIdle();
    this.scheduleSweep(); // drain_idle joins the timeouts it sweeps for
  }

  closeSocket(): Promise<void> {
    this.socketClosed ??= closeListening(this.server, this.acceptId);
    this.acceptId = null;
    return this.socketClosed;
  }

  activeCount(): number {
    return this.connections.size + (this.h2?.sessionCount() ?? 0);
  }

  destroyAll(): void {
    for (const c of this.connections) c.destroy();
    this.h2?.destroyAll();
    this.proxyGate.destroyAll();
  }

  stats(): Record<string, unknown> {
    return {
      protocol: this.protocol,
      address: this.address(),
      upstream: this.source.upstream ?? null,
      routes: this.source.routes.length + (this.source.upstream === undefined ? 0 : 1),
      active: this.connections.size,
      connections: countStates(this.connections),
      h2_sessions: this.h2?.sessionCount() ?? 0,
      requests_active: this.activeRequests,
      requests: this.requests.counts(),
    };
  }

  /** Requests and connections open, as gauges at scrape time (scraped-gauge.ts). */
  refreshMetrics(): void {
    this.requestsGauge.report(this.activeRequests);
    this.connectionsGauge.report(this.activeCount());
  }

  // ---- what connections and exchanges use -------------------------------------------------------

  get maxBodyReplay(): number {
    return this.settings.maxBodyReplay;
  }

  get spliceBodies(): boolean {
    return this.protocol === 'http' && this.source.native === 'auto' && nativePump.available;
  }

  get directWrites(): boolean {
    return this.source.native === 'auto' && directWritesAvailable;
  }

  upstream(name: string): Upstream | undefined {
    return this.ctx.upstream(name);
  }

  /** The process drains, or a reload retired this listener: responses close their connections. */
  draining(): boolean {
    return this.stopped || this.ctx.draining();
  }

  onExchangeStart(): void {
    this.activeRequests++;
  }

  onExchangeEnd(ex: ProxyExchange): void {
    this.activeRequests--;
    // a spliced body went out around Node, where the socket's byte count does not see it
    if (ex.splicedBytes > 0) this.txBytes.inc(ex.splicedBytes);
    this.requests.exchange(ex);
  }

  /**
   * A request zipline answered with an error itself (parse error, no route, header timeout, rate
   * limit). `headStartedAt`: when its head's first byte came, if the head took more than one read
   * (a dribbled one: client_header); the line's response_time counts from there, as nginx's
   * $request_time does.
   */
  localError(peer: LocalPeer, head: RequestHead | null, code: ErrorCode, headStartedAt = 0): void {
    const seconds = headStartedAt > 0 ? (Date.now() - headStartedAt) / 1000 : 0;
    this.requests.local(this.clientOf(peer, head), head, code, undefined, null, 0, seconds);
  }

  /** A request zipline answered itself: an error, or its route's `redirect`/`respond`. */
  localAnswer(peer: LocalPeer, head: RequestHead, answer: ErrorCode | Routed): void {
    const client = this.clientOf(peer, head);
    if (typeof answer === 'string') this.requests.local(client, head, answer);
    else {
      const { local, name } = answer.route.value;
      const bytes = head.method === 'HEAD' ? 0 : (local?.body.length ?? 0);
      this.requests.local(client, head, null, local?.status, name, bytes);
    }
  }

  /** The request's client as `real_ip_header` names it (real-ip.ts), for the access line. */
  private clientOf(peer: LocalPeer, head: RequestHead | null): LocalPeer {
    const s = this.settings;
    if (head === null || s.realIpHeader === null || peer.trusted !== true) return peer;
    const ip = requestClientIp(s.realIpHeader, s.trusted, head, { clientIp: peer.clientIp, trusted: true });
    return ip === peer.clientIp
      ? peer
      : { clientIp: ip, clientPort: peer.clientPort, httpVersion: peer.httpVersion ?? null };
  }

  /**
   * A plain-HTTP request sent to this https port: OpenSSL recognises its first bytes and fails the
   * handshake. The client is told so in plain text on the TCP socket under the TLS one (Node keeps
   * it reachable while `tlsClientError` runs; the ~200-byte answer fits the fresh socket's send
   * buffer, so it is out before the TLS socket's destroy closes it). nginx answers 400 the same way.
   */
  private answerPlainHttp(err: Error, socket: TLSSocket): boolean {
    const code = (err as { code?: string }).code;
    if (code !== 'ERR_SSL_HTTP_REQUEST' && code !== 'ERR_SSL_HTTPS_PROXY_REQUEST') return false;
    const raw = (socket as unknown as { _parent?: Socket | null })._parent;
    if (raw === null || raw === undefined || raw.destroyed || !raw.writable) return false;
    raw.end(
      errorResponse('ZL_HTTP_PLAIN_ON_TLS', {
        keepAlive: false,
        requestId: null,
        withBody: true,
        detail: 'a plain HTTP request was sent to an HTTPS port',
      }),
    );
    this.localError(
      { clientIp: raw.remoteAddress ?? '', clientPort: raw.remotePort ?? 0 },
      null,
      'ZL_HTTP_PLAIN_ON_TLS',
    );
    return true;
  }

  /** A connection the native thread accepted (native/pump/accept.c). */
  private acceptFd(fd: number, ip: string, port: number): void {
    // plain HTTP reads into the shared buffer (client-connection.ts); TLS reads the socket itself
    const reads: ClientReads | null = this.protocol === 'http' ? { conn: null } : null;
    const socket: Socket | null =
      reads === null
        ? socketFromFd(fd, false, ip, port)
        : socketFromFd(
            fd,
            false,
            ip,
            port,
            sharedReads(reads, () => socket),
          );
    if (socket === null) return;
    this.accepted(socket, reads);
  }

  /**
   * Plain HTTP: the connections libuv accepts itself (all of them without the native acceptor,
   * which otherwise shares the queue with it: 15–40 % of them here) are made into sockets
   * here rather than by net.Server, so that they too read into the shared buffer (`onread` can
   * only be given when a socket is made). The server's accept callback is the handle's
   * `onconnection` (Node's net.js, since 0.x); where it is missing the server's own path stays.
   */
  private adoptLibuvAccepts(): void {
    const handle = (this.server as unknown as { _handle?: { onconnection?: unknown } | null })._handle;
    if (handle === null || handle === undefined || typeof handle.onconnection !== 'function') return;
    handle.onconnection = (err: number, clientHandle: unknown): void => {
      if (err !== 0 || clientHandle === undefined) {
        // as net.Server does (EMFILE and the like): the listener's error log
        const code = err !== 0 ? getSystemErrorName(err) : 'EINVAL';
        this.server.emit('error', Object.assign(new Error(`accept: ${code}`), { code, syscall: 'accept' }));
        return;
      }
      const reads: ClientReads = { conn: null };
      let socket: Socket | null = null;
      try {
        socket = new Socket({
          handle: clientHandle,
          allowHalfOpen: true,
          readable: true,
          writable: true,
          onread: sharedReads(reads, () => socket),
        } as ConstructorParameters<typeof Socket>[0]);
      } catch {
        (clientHandle as { close?: () => void }).close?.();
        return;
      }
      this.accepted(socket, reads);
    };
    guardAccepts(this.server, shedCounter(this.name)); // around this callback too (listen.ts)
  }

  /** A connection accepted outside net.Server: the listener's limit, then on as usual. */
  private accepted(socket: Socket, reads: ClientReads | null): void {
    if (this.connections.size + (this.h2?.sessionCount() ?? 0) >= this.settings.maxConnections) {
      this.overLimit.refused();
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    // https: the TLS server's handshake, as for a libuv-accepted connection
    if (reads === null) this.server.emit('connection', socket);
    else this.onConnection(socket, reads);
  }

  private onConnection(socket: Socket, reads: ClientReads | null = null): void {
    if (this.ctx.draining()) {
      metrics.downstreamRejected.labels(this.name, 'ZL_DRAINING').inc();
      socket.destroy();
      return;
    }
    prepareWrites(socket);
    // (https: the gate is before the handshake, `beforeTls`; this socket is the TLS one)
    if (this.protocol === 'http' && this.proxyGate.applies(socket)) {
      const reader = this.proxyGate.read(socket, reads !== null, (s, rest) => {
        if (this.ctx.draining()) return void s.destroy();
        if (!this.admit(s)) return;
        this.totalCounter.inc();
        const conn = new ClientConnection(s, this, reads); // takes the shared reads over
        this.connections.add(conn);
        if (rest.length > 0) conn.onBytes(rest);
        if (reads === null) s.resume(); // the reader paused it
      });
      if (reads !== null) reads.conn = reader;
      return;
    }
    if (this.protocol === 'http' && !this.admit(socket)) return;
    this.totalCounter.inc();
    this.connections.add(new ClientConnection(socket, this, reads));
  }

  /** `clients`, `max_connections_per_client`: false when `socket`'s client is refused (closed, counted). */
  private admit(socket: Socket): boolean {
    return this.clientGate.admit(socket, this.settings.clients, this.settings.maxPerClient);
  }

  /** https: `clients` is checked before the TLS server's handshake handler (no handshake for a refused client). */
  private admitBeforeTls(tls: TlsServer): void {
    const handshake = tls.listeners('connection')[0] as ((socket: Socket) => void) | undefined;
    if (handshake === undefined) return;
    tls.removeListener('connection', handshake);
    tls.on('connection', (socket: Socket) => {
      if (this.admit(socket)) handshake.call(tls, socket);
    });
  }

  /** An HTTP/1.1 connection ended (once; an upgraded one when both its sides closed). */
  onConnectionClosed(conn: ClientConnection): void {
    this.connections.delete(conn);
    this.countBytes(conn.socket);
  }

  /** A client socket closed (HTTP/1.1, or HTTP/2 from h2.ts): the bytes it read and wrote (after TLS). */
  countBytes(socket: Socket): void {
    this.rxBytes.inc(socket.bytesRead);
    this.txBytes.inc(bytesWritten(socket));
  }

  // ---- timeouts ---------------------------------------------------------------------------------

  /**
   * One sweep for every timeout of this listener's connections and their exchanges: a period of
   * a quarter of the shortest timeout involved (10 ms – 1 s), so a timeout fires within 25 % late.
   */
  private scheduleSweep(): void {
    const s = this.settings;
    let shortest = Math.min(positive(s.clientHeaderMs), positive(s.clientIdleMs), ...s.routeTimeouts);
    if (this.draining()) shortest = Math.min(shortest, positive(s.drainIdleMs));
    for (const name of s.upstreams) {
      const up = this.ctx.upstream(name);
      if (up === undefined) continue;
      shortest = Math.min(
        shortest,
        positive(up.settings.responseHeaderTimeoutMs),
        positive(up.settings.idleTimeoutMs),
      );
    }
    const every = Math.max(10, Math.min(1000, Math.floor(shortest / 4)));
    if (every === this.sweepEveryMs && this.sweepTimer !== null) return;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepEveryMs = every;
    this.sweepTimer = setInterval(() => this.sweep(), every);
    this.sweepTimer.unref();
  }

  private sweep(): void {
    const now = Date.now();
    for (const c of [...this.connections]) c.tick(now);
    this.h2?.tick(now);
    if (this.connections.size === 0 && !this.server.listening && (this.h2?.sessionCount() ?? 0) === 0) {
      if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
      this.sweepTimer = null;
    }
  }

  /**
   * A plain-http client opened with the HTTP/2 preface (client-connection.ts found it in `bytes`,
   * what it has read so far; `h2c` is on): the connection is handed to node:http2, loaded with
   * the first one.
   */
  acceptH2c(conn: ClientConnection, bytes: Buffer): void {
    this.h2 ??= new H2Front(this);
    this.connections.delete(conn);
    conn.socket.unshift(Buffer.from(bytes)); // node:http2 takes what is buffered before reading
    this.h2.accept(conn.socket);
  }

  /** @internal for h2.ts */
  trackSession(session: Http2Session): void {
    // an h2c connection was counted when it was accepted as HTTP/1.1
    if (session.alpnProtocol !== 'h2c') this.totalCounter.inc();
  }
}

function positive(ms: number): number {
  return ms > 0 ? ms : Number.POSITIVE_INFINITY;
}

function countStates(conns: Iterable<ClientConnection>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of conns) {
    const s = c.state();
    out[s] = (out[s] ?? 0) + 1;
  }
  return out;
}

function warningsFor(cfg: HttpListenerConfig, address: string): string[] {
  const host = parseHostPort(address)?.host ?? '';
  const found = [realIpWarning(host, cfg.trusted_proxies, cfg.real_ip_header), h2HeadWarning(cfg)];
  return found.filter((w): w is string => w !== null);
}
