/**
 * Dialing an upstream over TCP (and TLS, with `upstreams.*.tls`): pick, connect with a timeout
 * (the handshake included), and on a connect failure try again (at most `retry.attempts` more
 * times). A try on a server this dial has not tried yet goes at once; when every eligible server
 * was tried, the next try waits a full-jitter backoff and may reuse them. Nothing is sent before
 * a connection is up, so every connect failure is retryable. With `send_proxy` the PROXY header
 * is the first write on the connection (before the TLS handshake, with `tls`).
 *
 * One `Dial` per downstream connection; `cancel()` frees the socket and timers of an attempt in
 * flight (the client went away). Exactly one of `onConnected`/`onFailed` is called, unless cancelled.
 */
import { connect, type Socket } from 'node:net';
import { type ConnectionOptions, connect as connectTls } from 'node:tls';
import { type ErrorCode, upstreamConnectCode } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import { fullJitterBackoff } from './backoff.js';
import type { Endpoint } from './endpoint.js';
import type { Upstream } from './upstream.js';

export interface DialCallbacks {
  /** With `send_proxy`: the PROXY header each connection begins with (before TLS, if any). */
  proxyHeader(version: 1 | 2): Buffer;
  onConnected(socket: Socket, endpoint: Endpoint, attempts: number): void;
  onFailed(code: ErrorCode, attempts: number, lastEndpoint: Endpoint | null): void;
}

type DialState = 'picking' | 'connecting' | 'backoff' | 'done';

export class Dial {
  state: DialState = 'picking';
  attempts = 0;
  private readonly tried: Endpoint[] = [];
  private socket: Socket | null = null;
  private endpoint: Endpoint | null = null;
  private timer: NodeJS.Timeout | null = null;
  private startedAt = 0;
  private lastCode: ErrorCode = 'ZL_UPSTREAM_UNAVAILABLE';
  private backoffRound = 0;

  constructor(
    private readonly upstream: Upstream,
    private readonly hash: number,
    private readonly cb: DialCallbacks,
  ) {}

  start(): void {
    this.next();
  }

  cancel(): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.clearTimer();
    if (this.socket !== null && this.endpoint !== null) {
      this.socket.destroy();
      this.upstream.release(this.endpoint);
    }
    this.socket = null;
  }

  private next(): void {
    const up = this.upstream;
    if (this.attempts > up.settings.retryAttempts) {
      this.fail(this.lastCode);
      return;
    }
    let picked = up.pick(this.hash, this.tried);
    if (typeof picked === 'string' && this.tried.length > 0) {
      // everything eligible was tried: back off, then allow the same servers again
      const eligibleAgain = up.pick(this.hash);
      if (typeof eligibleAgain !== 'string') {
        this.tried.length = 0;
        this.state = 'backoff';
        const s = up.settings;
        const delay = fullJitterBackoff(this.backoffRound++, s.backoffBaseMs, s.backoffMaxMs);
        this.timer = setTimeout(onBackoffDone, delay, this);
        return;
      }
      picked = eligibleAgain;
    }
    if (typeof picked === 'string') {
      metrics.upstreamUnavailable.labels(up.name, picked).inc();
      this.fail(this.attempts === 0 ? picked : this.lastCode);
      return;
    }
    this.connectTo(picked);
  }

  private connectTo(e: Endpoint): void {
    const up = this.upstream;
    if (this.attempts > 0) metrics.retries.labels(up.name).inc();
    this.attempts++;
    this.tried.push(e);
    this.endpoint = e;
    up.acquire(e);
    this.state = 'connecting';
    this.startedAt = performance.now();
    const tls = up.settings.tls;
    const proxy = up.settings.sendProxy;
    // `send_proxy`: the header is the connection's first write, queued until it is connected, so
    // it precedes the request bytes or, with TLS, the handshake (HAProxy `send-proxy` with `ssl`)
    let plain: Socket | null = null;
    if (tls === null || proxy !== 0) {
      plain = connect({ host: e.ip, port: e.port, noDelay: true, allowHalfOpen: true, keepAlive: true });
      if (proxy !== 0) plain.write(this.cb.proxyHeader(proxy));
    }
    const socket: Socket =
      tls === null
        ? (plain as Socket)
        : connectTls({
            ...tls.connectOptions(e),
            allowHalfOpen: true,
            ...(plain === null ? {} : { socket: plain }),
          } as ConnectionOptions);
    this.socket = socket;
    // a TLS socket made over one of ours does not report that one's connect errors (and an error
    // there later must not go unheard: the TLS socket reports its own)
    if (tls !== null && plain !== null) {
      plain.on('error', (err: NodeJS.ErrnoException) =>
        this.onError(socket, e, upstreamConnectCode(err, false)),
      );
    }
    // nothing may read before the connection's pump is chosen (the native pump reads the fd itself)
    socket.pause();
    if (tls !== null) {
      socket.setNoDelay(true);
      socket.setKeepAlive(true);
      socket.on('session', (session: Buffer) => tls.remember(e, session));
    }
    // with TLS the connection is up once the handshake is done (within `timeouts.connect`)
    socket.once(tls === null ? 'connect' : 'secureConnect', () => this.onConnect(socket, e));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const code = upstreamConnectCode(err, tls !== null);
      if (code === 'ZL_UPSTREAM_TLS' && this.state === 'connecting' && socket === this.socket)
        up.tlsFailed(e, err);
      this.onError(socket, e, code);
    });
    this.timer = setTimeout(onConnectTimeout, up.settings.connectTimeoutMs, this, socket, e);
  }

  private onConnect(socket: Socket, e: Endpoint): void {
    if (this.state !== 'connecting' || socket !== this.socket) return;
    this.clearTimer();
    socket.removeAllListeners('error');
    const ms = performance.now() - this.startedAt;
    e.recordSuccess(ms);
    metrics.upstreamConnectDuration.labels(this.upstream.name).observe(ms / 1000);
    this.state = 'done';
    this.socket = null;
    this.cb.onConnected(socket, e, this.attempts);
  }

  /** Called for errors and timeouts of the attempt in flight. */
  onError(socket: Socket, e: Endpoint, code: ErrorCode): void {
    if (this.state !== 'connecting' || socket !== this.socket) return;
    this.clearTimer();
    socket.on('error', ignoreError); // a late error from a socket we dropped must not crash
    socket.destroy();
    this.socket = null;
    this.upstream.release(e);
    metrics.upstreamConnectFailures.labels(this.upstream.name, e.address, code).inc();
    if (code === 'ZL_LOCAL_EXHAUSTED') {
      // our own descriptors or ports ran out: not the server's failure, and any retry now would
      // hit the same wall
      this.fail(code);
      return;
    }
    e.recordFailure(Date.now());
    this.lastCode = code;
    this.state = 'picking';
    this.next();
  }

  private fail(code: ErrorCode): void {
    this.state = 'done';
    this.cb.onFailed(code, this.attempts, this.endpoint);
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** @internal used by the backoff timer */
  resumeAfterBackoff(): void {
    this.timer = null;
    if (this.state !== 'backoff') return;
    this.state = 'picking';
    this.next();
  }
}

function ignoreError(): void {}

function onBackoffDone(dial: Dial): void {
  dial.resumeAfterBackoff();
}

function onConnectTimeout(dial: Dial, socket: Socket, e: Endpoint): void {
  dial.onError(socket, e, 'ZL_UPSTREAM_CONNECT_TIMEOUT');
}
