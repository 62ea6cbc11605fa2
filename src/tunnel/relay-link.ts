/**
 * The agent's link to one relay: dial (directly or `via` a proxy), TLS 1.3 with the pin or CA,
 * HELLO → HELLO_ACK, then a live `TunnelSession` until it ends; then reconnect with full-jitter
 * backoff (`reconnect.base`, 0.5 s, doubling to `reconnect.max`, 30 s; reset after 60 s up; a
 * GOAWAY retry-after is honoured). Every failed attempt destroys what it made (sockets, session,
 * timers).
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { hostname } from 'node:os';
import type { TLSSocket } from 'node:tls';
import type { TunnelAgentConfig } from '../config/schema.js';
import { parseHostPort } from '../config/units.js';
import { isZiplineError, ZiplineError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { metrics } from '../metrics/catalog.js';
import { fullJitterBackoff } from '../upstream/backoff.js';
import { helloExchange } from './agent-hello.js';
import { ERROR, ERROR_NAMES, FRAME, OPEN_STATUS } from './constants.js';
import { dialRelay, proxyFor } from './egress.js';
import { CODEC } from './handshake.js';
import { engine } from './native/binding.js';
import { NativeSession, type NativeTls } from './native/native-session.js';
import { AGENT_CIPHERS, type RelayRef, RelayTrust } from './relay-trust.js';
import { ewma } from './score.js';
import { type SessionOptions, TunnelSession } from './session.js';
import type { SessionApi, SessionStream } from './session-api.js';
import { connectTls } from './tls.js';

export type LinkState = 'connecting' | 'up' | 'draining' | 'backoff' | 'stopped';

const HEALTHY_RESET_MS = 60_000;
const LOAD_POLL_MS = 10_000;

export class RelayLink extends EventEmitter {
  state: LinkState = 'backoff';
  session: SessionApi | null = null;
  rttMs: number | null = null;
  load = 0;
  readonly failures: number[] = [];
  score = Number.NaN;
  private attempt = 0;
  private upSince = 0;
  private retryAfterMs = 0;
  private timer: NodeJS.Timeout | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private requestId = 0;
  lastError: string | null = null;
  sessionsOpened = 0;
  readonly host: string;
  readonly port: number;
  /** The pin or CA it is verified with, and the native engine's TLS context. */
  private readonly trust: RelayTrust;
  /** Left the relay list at a reload (`retire`): its session closes once its streams have ended. */
  private retired: { forget: boolean } | null = null;
  /** The session being set up (destroyed if the link stops meanwhile). */
  private connecting: {
    transport: Socket | null;
    tls: TLSSocket | null;
    session: SessionApi | null;
  } | null = null;
  /** DATAGRAM frames by association id (the agent's UDP channels). */
  readonly datagramSinks = new Map<number, (payload: Buffer) => void>();

  constructor(
    private relayRef: RelayRef,
    private cfg: TunnelAgentConfig,
    private readonly log: Logger,
  ) {
    super();
    const hp = parseHostPort(relayRef.address) as { host: string; port: number };
    this.host = hp.host;
    this.port = hp.port;
    this.trust = new RelayTrust(relayRef);
  }

  /** Its entry in the relay list. */
  get ref(): RelayRef {
    return this.relayRef;
  }

  /**
   * Another entry for this relay's address (a reload changed `fingerprint`, `ca`, `tls` or
   * `server_name`): reads the files it names now (a coded error, nothing changed, when it cannot)
   * and returns the change to apply. It applies from the next connection on; the open session
   * stays, as an upstream's new TLS settings apply to new connections. (A second session from
   * this agent would replace it at the relay: REPLACED.)
   */
  reconfigure(entry: RelayRef): () => void {
    const apply = this.trust.reconfigure(entry);
    return () => {
      this.relayRef = entry;
      apply();
    };
  }

  /**
   * Sessions run on the native engine (native: auto, built, and with zstd when compression asks
   * for it; the JavaScript session has its own zstd).
   */
  private useNative(): boolean {
    return this.cfg.native !== 'off' && engine.available && (this.cfg.compression !== 'zstd' || engine.zstd);
  }

  private sessionOptions(): SessionOptions {
    const cfg = this.cfg;
    return {
      role: 'agent',
      maxPayload: cfg.limits.max_payload,
      initialWindow: cfg.limits.stream_window,
      maxWindow: cfg.limits.max_stream_window,
      connectionWindow: cfg.limits.session_window,
      pingIntervalMs: cfg.heartbeat.interval,
      misses: cfg.heartbeat.misses,
      maxStreams: cfg.limits.max_streams,
      openTimeoutMs: cfg.connect_timeout,
    };
  }

  /** TLS (or not) and a session over a connected transport, on the native engine. */
  private async nativeSession(transport: Socket, timeoutMs: number): Promise<NativeSession> {
    let tls: NativeTls | null = null;
    let session: NativeSession;
    try {
      // inside the try: a context the engine cannot make (a CA file it refuses) frees the socket
      if (this.relayRef.tls)
        tls = {
          ctx: this.trust.nativeContext(),
          serverName: this.relayRef.server_name ?? this.host,
          verifyName: this.trust.pin === undefined,
        };
      session = NativeSession.start(transport, this.sessionOptions(), tls);
    } catch (err) {
      transport.destroy();
      throw err;
    }
    if (tls === null) return session;
    if (this.connecting !== null) this.connecting.session = session;
    const info = await session.handshake(timeoutMs);
    const pin = this.trust.pin;
    if (pin !== undefined && info.fingerprint !== pin) {
      session.destroy();
      throw new ZiplineError(
        'ZL_TUNNEL_TLS',
        `the relay's certificate sha256:${info.fingerprint} does not match the pinned fingerprint`,
      );
    }
    return session;
  }

  get address(): string {
    return this.relayRef.address;
  }

  get agentId(): string {
    return (
      this.cfg.id ??
      hostname()
        .replace(/[^A-Za-z0-9._:@-]/g, '-')
        .slice(0, 128)
    );
  }

  /** A method, so a check after an await is not narrowed away. */
  private isStopped(): boolean {
    return this.state === 'stopped';
  }

  /** Connects, now or after `delayMs` (a relay's retry-after). */
  start(delayMs = 0): void {
    if (this.state === 'stopped') return;
    if (delayMs <= 0) {
      void this.connect();
      return;
    }
    this.state = 'backoff';
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.connect();
    }, delayMs);
    this.timer.unref();
  }

  update(cfg: TunnelAgentConfig): void {
    this.cfg = cfg;
  }

  /**
   * The relay's `ca` file renewed in place: read again (at each reload) and, when its bytes
   * differ, what the next connection verifies with (the open session stays). True when it
   * changed; throws a coded error when it cannot be read (the previous one stays).
   */
  renewCa(): boolean {
    return this.trust.renewCa();
  }

  private async connect(): Promise<void> {
    this.state = 'connecting';
    const cfg = this.cfg;
    const deadline = Date.now() + cfg.connect_timeout;
    const left = (): number => Math.max(1, deadline - Date.now());
    const attempt = {
      transport: null as Socket | null,
      tls: null as TLSSocket | null,
      session: null as SessionApi | null,
    };
    this.connecting = attempt;
    let established: { session: SessionApi; load: number; codecs: number } | null = null;
    try {
      const via = proxyFor(this.host, this.port, cfg.via);
      attempt.transport = await dialRelay(this.host, this.port, via, left());
      if (this.isStopped()) throw new ZiplineError('ZL_TUNNEL_CLOSED', 'stopped');
      let session: SessionApi;
      if (this.useNative()) {
        const transport = attempt.transport;
        attempt.transport = null; // the engine holds the connection from here
        session = await this.nativeSession(transport, left());
      } else {
        let sock: Socket | TLSSocket = attempt.transport;
        if (this.relayRef.tls) {
          attempt.tls = await connectTls(
            attempt.transport,
            {
              host: this.host,
              fingerprint: this.trust.pin,
              ca: this.trust.caFile,
              serverName: this.relayRef.server_name,
              ciphers: AGENT_CIPHERS,
            },
            left(),
          );
          sock = attempt.tls;
        }
        session = new TunnelSession(sock, this.sessionOptions());
      }
      attempt.session = session;
      // streams are the agent's to open: a relay's OPEN is refused at once (status 2), not left
      // unanswered for the session's life with its window of bytes buffered
      session.on('stream', (s: SessionStream) => session.answer(s, OPEN_STATUS.NOT_ALLOWED));
      if (this.isStopped()) throw new ZiplineError('ZL_TUNNEL_CLOSED', 'stopped');
      const { ack, zstdRefused } = await helloExchange(session, this.agentId, cfg, left(), (ms) => {
        this.retryAfterMs = ms;
      });
      if (this.isStopped()) throw new ZiplineError('ZL_TUNNEL_CLOSED', 'stopped');
      this.connecting = null;
      established = { session, load: ack.loadPermille / 1000, codecs: ack.codecs };
      if (zstdRefused) {
        this.log.warn({ relay: this.address }, 'tunnel: the relay does not offer zstd; running uncompressed');
      }
    } catch (err) {
      attempt.session?.destroy();
      attempt.tls?.destroy();
      attempt.transport?.destroy();
      this.connecting = null;
      metrics.tunnelReconnects.labels(this.address, 'failed').inc();
      this.lastError = isZiplineError(err) ? `${err.code}: ${err.message}` : (err as Error).message;
      if (!this.isStopped()) {
        this.log.warn(
          {
            relay: this.address,
            code: isZiplineError(err) ? err.code : 'ZL_UPSTREAM_CONNECT_FAILED',
            err: (err as Error).message,
          },
          'tunnel: cannot reach relay',
        );
        this.down(isZiplineError(err) && err.code === 'ZL_TUNNEL_AUTH_FAILED' ? 10_000 : 0);
      }
      return;
    }
    // outside the try: a failure from here on is a bug to surface, not a failed attempt
    if (established !== null) this.up(established.session, established.load, established.codecs);
  }

  private up(session: SessionApi, load: number, codecs: number): void {
    this.session = session;
    this.state = 'up';
    this.upSince = Date.now();
    this.load = load;
    this.lastError = null;
    this.sessionsOpened++;
    metrics.tunnelReconnects.labels(this.address, 'up').inc();
    metrics.tunnelSessions.labels('agent').inc();
    metrics.tunnelRelayUp.labels(this.address).set(1);
    this.log.info(
      {
        relay: this.address,
        agent: this.agentId,
        compression: codecs & CODEC.ZSTD ? 'zstd' : 'none',
        engine: session.engine,
      },
      'tunnel session up',
    );
    session.on('rtt', (ms: number) => {
      if (this.retired !== null) return; // its address may have a successor by now
      this.rttMs = ewma(this.rttMs, ms);
      metrics.tunnelRtt.labels(this.address).set(this.rttMs / 1000);
      this.emit('change');
    });
    session.on('frame', (type: number, _f: number, id: number, payload: Buffer) => {
      if (type === FRAME.DATAGRAM) this.datagramSinks.get(id)?.(payload);
      else if (type === FRAME.RESPONSE) this.onResponse(payload);
    });
    session.on('goaway', (code: number, retryAfter: number) => {
      // no new streams here; the session closes when its streams are done
      if (this.state === 'stopped') return; // stopped or retired: it is going away already
      this.retryAfterMs = retryAfter;
      this.state = 'draining';
      this.log.info({ relay: this.address, code: ERROR_NAMES[code] ?? code }, 'tunnel: relay going away');
      this.emit('change');
      // the relay drains with streams open here: new streams need not wait for their end, its
      // address may be served again by then (a restart), or at once (an upgrade: retry-after 0)
      const busy = code === ERROR.SHUTTING_DOWN && (this.session?.streams.size ?? 0) > 0;
      this.closeWhenIdle();
      if (busy) this.emit('relay-draining', retryAfter);
    });
    session.on('fatal', (code: number, reason: string) => {
      this.log.warn(
        { relay: this.address, code: ERROR_NAMES[code] ?? code, reason },
        'tunnel session failed',
      );
    });
    session.once('close', () => {
      metrics.tunnelSessions.labels('agent').dec();
      // a retired link's address may have a successor whose session is up by now
      if (this.retired === null) metrics.tunnelRelayUp.labels(this.address).set(0);
      else if (this.retired.forget) this.forgetGauges();
      if (this.pollTimer !== null) clearInterval(this.pollTimer);
      this.pollTimer = null;
      this.session = null;
      this.datagramSinks.clear();
      if (this.state === 'stopped') {
        if (this.retired !== null) this.emit('retired');
        return;
      }
      this.log.warn({ relay: this.address }, 'tunnel session lost');
      this.down(0);
    });
    session.ping(); // an RTT sample at once
    this.pollTimer = setInterval(() => this.pollLoad(), LOAD_POLL_MS);
    this.pollTimer.unref();
    this.emit('change');
  }

  /** Closes `s` once its streams have ended (after a GOAWAY either way: no new ones come). */
  private closeWhenIdle(s: SessionApi | null = this.session): void {
    if (s === null || s.closed) return;
    let left = s.streams.size;
    if (left === 0) {
      s.close();
      return;
    }
    // counted once per stream, then looked at again (a stream opened meanwhile is waited for too)
    const ended = (): void => {
      if (--left === 0) setImmediate(() => this.closeWhenIdle(s));
    };
    for (const st of s.streams.values()) st.once('close', ended);
  }

  private pollLoad(): void {
    const s = this.session;
    if (s === null || this.state !== 'up') return;
    const p = Buffer.allocUnsafe(4 + 4);
    p.writeUInt32BE(++this.requestId >>> 0, 0);
    p.write('load', 4);
    s.sendControl(FRAME.REQUEST, 0, 0, p);
  }

  private onResponse(payload: Buffer): void {
    if (payload.length < 5 || payload[4] !== 0) return;
    try {
      const body = JSON.parse(payload.toString('utf8', 5)) as { load_permille?: unknown };
      if (typeof body.load_permille === 'number') {
        this.load = body.load_permille / 1000;
        this.emit('change');
      }
    } catch {
      // a malformed answer changes nothing
    }
  }

  /** The session ended or an attempt failed: count it, back off, try again. */
  private down(minDelayMs: number): void {
    const now = Date.now();
    this.failures.push(now);
    while (this.failures.length > 50) this.failures.shift();
    if (this.upSince > 0 && now - this.upSince >= HEALTHY_RESET_MS) this.attempt = 0;
    this.upSince = 0;
    const delay = Math.max(
      minDelayMs,
      // honoured up to reconnect.max: a relay (or a bug in one) cannot keep the agent away longer
      Math.min(this.retryAfterMs, this.cfg.reconnect.max),
      fullJitterBackoff(this.attempt++, this.cfg.reconnect.base, this.cfg.reconnect.max),
    );
    this.retryAfterMs = 0;
    this.state = 'backoff';
    this.emit('change');
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.connect();
    }, delay);
    this.timer.unref();
  }

  /** Stops for good: no reconnects; the open session says GOAWAY and closes now. */
  stop(): void {
    this.end('now');
  }

  /**
   * Left the agent's relay list at a reload (or the agent's id changed, and a new link took its
   * place): no reconnects, and no new streams (GOAWAY); its open session closes once its streams
   * have ended, then 'retired' is emitted. `forget`: the address left the list, so its gauges go
   * (as a removed upstream's).
   */
  retire(forget: boolean): void {
    this.retired = { forget };
    const idle = this.session === null;
    this.end('idle');
    if (idle) {
      if (forget) this.forgetGauges();
      setImmediate(() => this.emit('retired'));
    }
  }

  private forgetGauges(): void {
    metrics.tunnelRelayUp.remove(this.address);
    metrics.tunnelRtt.remove(this.address);
  }

  private end(session: 'now' | 'idle'): void {
    this.state = 'stopped';
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.pollTimer !== null) clearInterval(this.pollTimer);
    this.timer = null;
    this.pollTimer = null;
    const c = this.connecting;
    if (c !== null) {
      c.session?.destroy();
      c.tls?.destroy();
      c.transport?.destroy();
    }
    const s = this.session;
    if (s !== null) {
      s.goAway(ERROR.NO_ERROR);
      if (session === 'now') setImmediate(() => s.close());
      else this.closeWhenIdle(s);
    }
    this.trust.dropContext(); // sessions made from it keep their own reference
  }

  stats(): Record<string, unknown> {
    const s = this.session;
    const zIn = s?.compressIn ?? 0;
    const zOut = s?.compressOut ?? 0;
    return {
      address: this.address,
      state: this.state,
      rtt_ms: this.rttMs === null ? null : Math.round(this.rttMs * 1000) / 1000,
      load: Math.round(this.load * 1000) / 1000,
      score: Number.isNaN(this.score) ? null : Math.round(this.score * 1000) / 1000,
      failures_10m: this.failures.filter((t) => Date.now() - t <= 600_000).length,
      streams: s?.streams.size ?? 0,
      bytes_in: s?.bytesIn ?? 0,
      bytes_out: s?.bytesOut ?? 0,
      compression: s?.compression ? 'zstd' : 'none',
      engine: s?.engine ?? (this.useNative() ? 'native' : 'js'),
      compression_ratio: zOut > 0 ? Math.round((zIn / zOut) * 100) / 100 : null,
      sessions_opened: this.sessionsOpened,
      last_error: this.lastError,
    };
  }
}
