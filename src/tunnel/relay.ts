/**
 * The relay: accepts agent sessions (TLS 1.3 by default), authenticates each with its HELLO,
 * and opens the streams agents ask for to destinations on the allow list. One `RelaySession`
 * per agent connection; a second session with the same agent id replaces the first (GOAWAY
 * REPLACED). Failed authentication is rate-limited per source address.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { createSecureContext, type SecureContext, TLSSocket } from 'node:tls';
import type { TunnelRelayConfig } from '../config/schema.js';
import { formatHostPort } from '../config/units.js';
import { ZiplineError } from '../errors.js';
import { type ClientAccess, ClientGate, compileClientAccess } from '../l4/client-access.js';
import type { L4Context } from '../l4/context.js';
import { closeListening, listenOn, onServerError } from '../l4/listen.js';
import { metrics } from '../metrics/catalog.js';
import { DirectDialer } from '../proxy/dialer.js';
import { ProxyGate } from '../proxy-protocol/gate.js';
import { clientAddressOf } from '../proxy-protocol/reader.js';
import { compileProxyProtocol, type ProxyProtocolSettings } from '../proxy-protocol/settings.js';
import { AllowList } from './allow-list.js';
import { ERROR, FRAME } from './constants.js';
import { AuthLimiter, CODEC, decodeHello, encodeHelloAck, NonceCache, verifyProof } from './handshake.js';
import { engine } from './native/binding.js';
import { dropTlsContext, NativeSession, tlsContext } from './native/native-session.js';
import { RelayLoad } from './relay-load.js';
import { RelaySession } from './relay-session.js';
import { type SessionOptions, TunnelSession } from './session.js';
import type { SessionApi } from './session-api.js';
import { type RelayTls, relaySecureOptions, relayTls, relayTlsFromFiles } from './tls.js';

export const HANDSHAKE_TIMEOUT_MS = 10_000;

export class TunnelRelay {
  cfg: TunnelRelayConfig;
  dialer: DirectDialer;
  readonly sessions = new Set<RelaySession>();
  private readonly byAgent = new Map<string, RelaySession>();
  private server: Server;
  private readonly limiter = new AuthLimiter();
  private readonly nonces = new NonceCache();
  private tls: RelayTls | null = null;
  private secureContext: SecureContext | null = null;
  /** The native engine's TLS context (0: none, or TLS off). */
  private nativeCtx = 0;
  /** Connections still in TLS or HELLO. */
  private readonly pending = new Set<{ destroy(): void }>();
  private readonly loadMeter = new RelayLoad();
  authFailures = 0;
  /** `proxy_protocol`: the load balancers whose connections begin with a PROXY header. */
  private proxyProtocol: ProxyProtocolSettings | null;
  private readonly proxyGate: ProxyGate;
  /** `clients`: the agent addresses allowed to connect. */
  private clients: ClientAccess | null;
  private readonly clientGate: ClientGate;

  constructor(
    cfg: TunnelRelayConfig,
    readonly ctx: L4Context,
  ) {
    this.cfg = cfg;
    this.dialer = new DirectDialer({
      allow: new AllowList(cfg.allow),
      connectTimeoutMs: cfg.connect_timeout,
    });
    this.proxyGate = new ProxyGate('tunnel.relay', ctx.log, () => this.proxyProtocol);
    this.proxyProtocol = compileProxyProtocol(cfg.proxy_protocol);
    this.clients = compileClientAccess(cfg.clients);
    this.clientGate = new ClientGate('tunnel.relay', ctx.log);
    this.server = this.makeServer();
  }

  private makeServer(): Server {
    const server = createServer({ allowHalfOpen: false, noDelay: true, keepAlive: true });
    server.on('connection', (s) => {
      // behind a load balancer: its PROXY header names the agent (source, rate limiting, logs)
      if (this.proxyGate.applies(s))
        this.proxyGate.read(s, false, (sock, rest) => this.onConnection(sock, rest));
      else this.onConnection(s, null);
    });
    onServerError(server, (err) => this.ctx.log.error({ err }, 'tunnel relay listener error'));
    return server;
  }

  async start(): Promise<void> {
    if (this.cfg.tls !== 'off') {
      const files = this.cfg.tls === 'auto' ? 'auto' : { ...this.cfg.tls, ciphers: this.cfg.ciphers };
      this.useTls(await relayTls(files, this.cfg.state_dir, this.cfg.ciphers));
    }
    if (this.useNative()) engine.warm();
    await listenOn(this.server, this.cfg.listen, 'tunnel.relay');
    this.logListening();
  }

  private logListening(): void {
    this.ctx.log.info(
      {
        address: this.address(),
        tls: this.tls === null ? 'off' : 'TLSv1.3',
        ciphers: this.tls?.ciphers,
        engine: this.useNative() ? 'native' : 'js',
        fingerprint: this.tls?.fingerprint,
        certificate: this.tls?.certPath,
        created: this.tls?.created,
      },
      this.tls === null
        ? 'tunnel relay listening (plain TCP)'
        : `tunnel relay listening; fingerprint ${this.tls.fingerprint}`,
    );
  }

  /**
   * A reload's new `listen`: bound first (when that fails, a coded error and the relay stays where
   * it is; an address that overlaps the old one, the same port, needs a restart), then the old
   * listener stops accepting. Sessions accepted there go on.
   */
  async rebind(listen: string): Promise<void> {
    const next = this.makeServer();
    await listenOn(next, listen, 'tunnel.relay');
    const old = this.server;
    this.server = next;
    old.close();
    this.logListening();
  }

  /**
   * A reload's new `tls`, `ciphers` (or `state_dir` for `tls: auto`): what new sessions get; open
   * sessions keep theirs. A coded error when the certificate cannot be read or used (the previous
   * settings stay).
   */
  async setTls(cfg: TunnelRelayConfig): Promise<void> {
    const files = cfg.tls === 'off' || cfg.tls === 'auto' ? cfg.tls : { ...cfg.tls, ciphers: cfg.ciphers };
    this.switchTls(
      files === 'off' ? null : await relayTls(files, cfg.state_dir, cfg.ciphers),
      'new TLS settings',
    );
  }

  /**
   * The certificate new sessions get, for both engines. Throws (the old one stays) when Node's
   * TLS cannot use it; the native engine's refusal only sends new sessions to JavaScript.
   */
  private useTls(tls: RelayTls): void {
    const secureContext = createSecureContext(relaySecureOptions(tls));
    let nativeCtx = 0;
    if (engine.available) {
      try {
        nativeCtx = tlsContext(true, {
          cert: tls.cert.toString(),
          key: tls.key.toString(),
          ciphers: tls.ciphers,
        });
      } catch (err) {
        this.ctx.log.warn(
          { code: 'ZL_TUNNEL_TLS', err: (err as Error).message },
          'tunnel relay: the native engine cannot use this certificate; sessions run in JavaScript',
        );
      }
    }
    // sessions made from the old native context keep their own reference
    if (this.nativeCtx !== 0) dropTlsContext(this.nativeCtx);
    this.tls = tls;
    this.secureContext = secureContext;
    this.nativeCtx = nativeCtx;
  }

  /**
   * `tls: { cert, key }` renewed in place (same paths, as certbot writes them): read again at
   * each reload and, when the bytes differ, what new sessions get (open sessions keep theirs).
   * True when applied; throws a coded error when a file cannot be read or used (the old stays).
   */
  renewTls(): boolean {
    const files = this.cfg.tls;
    if (files === 'off' || files === 'auto' || this.tls === null) return false;
    const next = relayTlsFromFiles({ ...files, ciphers: this.cfg.ciphers });
    if (String(next.cert) === String(this.tls.cert) && String(next.key) === String(this.tls.key))
      return false;
    this.switchTls(next, 'renewed certificate');
    return true;
  }

  /** What new sessions get (null: plain TCP); a coded error when Node's TLS cannot use it. */
  private switchTls(next: RelayTls | null, what: string): void {
    if (next === null) {
      if (this.nativeCtx !== 0) dropTlsContext(this.nativeCtx);
      this.nativeCtx = 0;
      this.tls = null;
      this.secureContext = null;
      this.ctx.log.info({ tls: 'off' }, `tunnel relay: ${what}: new sessions in plain TCP`);
      return;
    }
    try {
      this.useTls(next);
    } catch (err) {
      throw new ZiplineError('ZL_TLS_CONFIG', `tunnel relay: ${(err as Error).message}`, { cause: err });
    }
    this.ctx.log.info(
      { fingerprint: next.fingerprint, certificate: next.certPath },
      `tunnel relay: ${what} for new sessions; fingerprint ${next.fingerprint}`,
    );
  }

  get fingerprint(): string | null {
    return this.tls?.fingerprint ?? null;
  }

  address(): string {
    const a = this.server.address();
    return a !== null && typeof a === 'object' ? formatHostPort(a.address, a.port) : '';
  }

  /** Tokens, allow list, timeouts and limits apply to new streams and sessions at once. */
  update(cfg: TunnelRelayConfig): void {
    this.cfg = cfg;
    this.proxyProtocol = compileProxyProtocol(cfg.proxy_protocol);
    this.clients = compileClientAccess(cfg.clients);
    this.dialer.update({ allow: new AllowList(cfg.allow), connectTimeoutMs: cfg.connect_timeout });
  }

  /** Load, ‰ (src/tunnel/relay-load.ts). */
  get load(): number {
    return this.loadMeter.permille;
  }

  /** New sessions run on the native engine (native: auto, built, and able to use our TLS). */
  private useNative(): boolean {
    return this.cfg.native !== 'off' && engine.available && (this.tls === null || this.nativeCtx !== 0);
  }

  private sessionOptions(): SessionOptions {
    const limits = this.cfg.limits;
    return {
      role: 'relay',
      maxPayload: limits.max_payload,
      initialWindow: limits.stream_window,
      maxWindow: limits.max_stream_window,
      connectionWindow: limits.session_window,
      pingIntervalMs: this.cfg.heartbeat.interval,
      misses: this.cfg.heartbeat.misses,
      maxStreams: limits.max_streams,
    };
  }

  /** `early`: bytes that came after a PROXY header (null without one), put back for the handshake. */
  private onConnection(socket: Socket, early: Buffer | null): void {
    if (!this.clientGate.admit(socket, this.clients, 0)) return;
    const source = clientAddressOf(socket).ip;
    if (this.ctx.draining() || this.limiter.blocked(source)) {
      if (!this.ctx.draining()) metrics.tunnelAuthFailures.labels('rate_limited').inc();
      socket.destroy();
      return;
    }
    if (this.sessions.size + this.pending.size >= this.cfg.max_sessions && !this.displacePending()) {
      metrics.tunnelRejected.labels('max_sessions').inc();
      socket.destroy();
      return;
    }
    socket.on('error', () => {});
    if (early !== null && early.length > 0) socket.unshift(Buffer.from(early));
    // the native engine takes the descriptor and what was read before it (`early`, put back)
    if (this.useNative()) {
      this.acceptNative(socket, source);
      return;
    }
    this.pending.add(socket);
    socket.once('close', () => this.pending.delete(socket));
    let refused = false; // counted once, under one reason
    const refuse = (reason: 'handshake_timeout' | 'tls_handshake'): void => {
      if (refused) return;
      refused = true;
      metrics.tunnelRejected.labels(reason).inc();
    };
    const deadline = setTimeout(() => {
      refuse('handshake_timeout');
      socket.destroy();
    }, HANDSHAKE_TIMEOUT_MS);
    socket.once('close', () => clearTimeout(deadline));
    if (this.secureContext === null) {
      this.beginSession(new TunnelSession(socket, this.sessionOptions()), socket, source, deadline);
      return;
    }
    const tls = new TLSSocket(socket, { isServer: true, secureContext: this.secureContext });
    let secured = false;
    tls.on('error', () => {
      // not TLS, a failed handshake (counted whether or not the raw socket has already closed)
      if (!secured) refuse('tls_handshake');
      socket.destroy();
    });
    // a peer that went away mid-handshake: a server-side TLSSocket reports no error for a close
    // while TLS waits for the rest of a record (the native engine counts it as tls-error)
    socket.once('close', () => {
      if (!secured && !this.ctx.draining()) refuse('tls_handshake');
    });
    tls.once('secure', () => {
      secured = true;
      this.beginSession(new TunnelSession(tls, this.sessionOptions()), socket, source, deadline);
    });
  }

  /**
   * At max_sessions, a new connection takes the place of the oldest one still in its handshake
   * (insertion order), so connections that never authenticate cannot keep agents out by holding
   * every place for the handshake's 10 s. Sessions are never displaced. False: none to displace.
   */
  private displacePending(): boolean {
    const oldest = this.pending.values().next();
    if (oldest.done === true) return false;
    this.pending.delete(oldest.value);
    metrics.tunnelRejected.labels('handshake_displaced').inc();
    oldest.value.destroy();
    return true;
  }

  /** The connection goes to the native engine at once; TLS and frames run there. */
  private acceptNative(socket: Socket, source: string): void {
    let session: NativeSession;
    try {
      session = NativeSession.start(
        socket,
        this.sessionOptions(),
        this.tls === null ? null : { ctx: this.nativeCtx },
      );
    } catch (err) {
      this.ctx.log.warn(
        { code: 'ZL_TUNNEL_NATIVE', err: (err as Error).message },
        'tunnel relay: accept failed',
      );
      socket.destroy();
      return;
    }
    this.pending.add(session);
    const deadline = setTimeout(() => {
      metrics.tunnelRejected.labels('handshake_timeout').inc();
      session.destroy();
    }, HANDSHAKE_TIMEOUT_MS);
    session.once('close', () => {
      clearTimeout(deadline);
      this.pending.delete(session);
    });
    session.once('tls-error', () => metrics.tunnelRejected.labels('tls_handshake').inc());
    session.once('secure', () => this.beginSession(session, session, source, deadline));
  }

  private beginSession(
    session: SessionApi,
    pendingKey: { destroy(): void },
    source: string,
    deadline: NodeJS.Timeout,
  ): void {
    const rs = new RelaySession(this, session, source);
    session.on('frame', (type: number, _flags: number, id: number, payload: Buffer) => {
      if (type === FRAME.HELLO && id === 0 && !rs.authenticated) {
        clearTimeout(deadline);
        this.pending.delete(pendingKey);
        this.onHello(rs, source, payload);
      }
    });
    session.once('close', () => {
      clearTimeout(deadline);
      this.pending.delete(pendingKey);
    });
  }

  private onHello(rs: RelaySession, source: string, payload: Buffer): void {
    const hello = decodeHello(payload);
    const binding = rs.session.binding();
    const plain = this.tls === null;
    const ok =
      hello !== null &&
      hello.version === 1 &&
      verifyProof(this.cfg.tokens, binding, hello) &&
      // over plain TCP the proof is not bound to the connection: accept each HELLO once
      (!plain || this.nonces.accept(hello.timestampMs, hello.nonce));
    if (!ok || hello === null) {
      this.limiter.fail(source);
      this.authFailures++;
      metrics.tunnelAuthFailures.labels(hello === null ? 'malformed' : 'bad_proof').inc();
      this.ctx.log.warn({ source, code: 'ZL_TUNNEL_AUTH_FAILED' }, 'tunnel agent failed authentication');
      rs.session.fatal(ERROR.AUTH_FAILED, 'authentication failed');
      return;
    }
    const codecs = hello.want & hello.codecs & CODEC.ZSTD && rs.session.codecAvailable ? CODEC.ZSTD : 0;
    rs.session.compression = codecs !== 0;
    rs.session.setPeer(hello);
    const previous = this.byAgent.get(hello.agentId);
    if (previous !== undefined && previous !== rs) {
      previous.session.fatal(ERROR.REPLACED, 'a new session from the same agent id');
    }
    rs.authenticate(hello.agentId, randomBytes(16));
    this.sessions.add(rs);
    this.byAgent.set(hello.agentId, rs);
    metrics.tunnelSessions.labels('relay').inc();
    const limits = this.cfg.limits;
    rs.session.sendControl(
      FRAME.HELLO_ACK,
      0,
      0,
      encodeHelloAck({
        sessionId: rs.sessionId,
        codecs,
        maxPayload: limits.max_payload,
        initialWindow: limits.stream_window,
        connectionWindow: limits.session_window,
        sessions: this.sessions.size,
        streams: this.streamCount(),
        loadPermille: this.load,
      }),
    );
    this.ctx.log.info(
      {
        agent: hello.agentId,
        source,
        session: rs.sessionId.toString('hex'),
        compression: codecs ? 'zstd' : 'none',
      },
      'tunnel session up',
    );
  }

  /** A RelaySession ended. */
  forget(rs: RelaySession): void {
    if (!this.sessions.delete(rs)) return;
    metrics.tunnelSessions.labels('relay').dec();
    if (this.byAgent.get(rs.agentId) === rs) this.byAgent.delete(rs.agentId);
    this.ctx.log.info({ agent: rs.agentId, session: rs.sessionId.toString('hex') }, 'tunnel session closed');
  }

  streamCount(): number {
    let n = 0;
    for (const s of this.sessions) n += s.session.streams.size;
    return n;
  }

  /**
   * Stops accepting; sessions are told GOAWAY SHUTTING_DOWN and end when their streams do.
   * `retryAfterMs`: when their agents may come back (0 at an upgrade: the new process accepts).
   */
  async stopAccepting(retryAfterMs = 1000): Promise<void> {
    for (const s of [...this.pending]) s.destroy();
    for (const rs of this.sessions) rs.drain(retryAfterMs);
    await closeListening(this.server, null);
    this.loadMeter.stop();
  }

  /** Open streams (drain waits for them). */
  activeCount(): number {
    let n = 0;
    for (const rs of this.sessions) n += rs.session.streams.size;
    return n + this.pending.size;
  }

  destroyAll(): void {
    for (const rs of [...this.sessions]) rs.session.destroy();
    for (const s of [...this.pending]) s.destroy();
    this.proxyGate.destroyAll();
    // sessions made from it keep their own reference
    if (this.nativeCtx !== 0) dropTlsContext(this.nativeCtx);
    this.nativeCtx = 0;
  }

  stats(): Record<string, unknown> {
    return {
      address: this.address(),
      tls:
        this.tls === null
          ? 'off'
          : { fingerprint: this.tls.fingerprint, ciphers: this.tls.ciphers, certificate: this.tls.certPath },
      engine: this.useNative() ? 'native' : 'js',
      sessions: [...this.sessions].map((rs) => rs.stats()),
      auth_failures: this.authFailures,
      load_permille: this.load,
    };
  }

  refreshMetrics(): void {
    for (const rs of this.sessions) rs.session.flushFrameMetrics();
  }

  /** For access lines. */
  logStream(entry: Record<string, unknown>): void {
    if (this.ctx.accessLog.enabled) this.ctx.accessLog.write(entry);
  }
}
