/**
 * The keep-alive pool of one upstream, shared by every HTTP listener that routes to it (nginx
 * `upstream { keepalive }`, undici `Pool`): per endpoint a LIFO stack of idle connections of at
 * most `keepalive.max_idle`, each closed after `idle_timeout` idle or `max_requests` requests.
 *
 * Requests wait here (FIFO, at most `circuit_breaker.max_pending`, each for at most the connect
 * timeout) when the upstream is at `circuit_breaker.max_connections` or every server at its own
 * `max_connections`.
 */
import type { Socket } from 'node:net';
import { type ErrorCode, upstreamConnectCode } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { Upstream } from '../upstream/upstream.js';
import { type ConnectionHome, connectUpstream, UpstreamConnection } from './upstream-connection.js';

export type ConnectCallback = (conn: UpstreamConnection | null, code: ErrorCode | null) => void;

export interface PoolWaiter {
  /** Capacity was freed: try again. */
  wake(): void;
}

export class HttpPool implements ConnectionHome {
  private readonly idle = new Map<Endpoint, UpstreamConnection[]>();
  private readonly waiters: PoolWaiter[] = [];
  private sweepTimer: NodeJS.Timeout | null = null;
  /** Connections opened over the pool's life, and requests that reused one. */
  opened = 0;
  reusedRequests = 0;
  private readonly newCounter;
  private readonly reusedCounter;

  constructor(readonly upstream: Upstream) {
    this.newCounter = metrics.upstreamRequests.labels(upstream.name, 'new');
    this.reusedCounter = metrics.upstreamRequests.labels(upstream.name, 'reused');
  }

  /** An idle connection to `e` (unless `fresh`), else a new one; `cb` gets it or a connect error code. */
  connection(e: Endpoint, fresh: boolean, cb: ConnectCallback): () => void {
    if (!fresh) {
      const stack = this.idle.get(e);
      while (stack !== undefined && stack.length > 0) {
        const conn = stack.pop() as UpstreamConnection;
        if (conn.closed) continue;
        conn.requests++;
        this.reusedRequests++;
        cb(conn, null);
        return noop;
      }
    }
    return this.open(e, cb);
  }

  private open(e: Endpoint, cb: ConnectCallback): () => void {
    const settings = this.upstream.settings;
    const started = performance.now();
    const opened: { conn: UpstreamConnection | null } = { conn: null };
    const tls = settings.tls;
    const socket: Socket = connectUpstream(e, opened, tls);
    // with TLS the connection is ready once the handshake is done (in `timeouts.connect`)
    const ready = tls === null ? 'connect' : 'secureConnect';
    let done = false;
    const finish = (conn: UpstreamConnection | null, code: ErrorCode | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.removeListener(ready, onConnect);
      socket.removeListener('error', onError);
      cb(conn, code);
    };
    const onConnect = (): void => {
      metrics.upstreamConnectDuration
        .labels(this.upstream.name)
        .observe((performance.now() - started) / 1000);
      this.opened++;
      const conn = new UpstreamConnection(socket, e, this);
      opened.conn = conn;
      conn.requests = 1;
      finish(conn, null);
    };
    const onError = (err: NodeJS.ErrnoException): void => {
      socket.on('error', noop);
      socket.destroy();
      const code = upstreamConnectCode(err, tls !== null);
      if (code === 'ZL_UPSTREAM_TLS') this.upstream.tlsFailed(e, err);
      finish(null, code);
    };
    socket.once(ready, onConnect);
    socket.once('error', onError);
    const timer = setTimeout(() => {
      socket.on('error', noop);
      socket.destroy();
      finish(null, 'ZL_UPSTREAM_CONNECT_TIMEOUT');
    }, settings.connectTimeoutMs);
    return () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.on('error', noop);
      socket.destroy();
    };
  }

  /** The exchange is done with `conn`; keep it if it may serve another request. */
  release(conn: UpstreamConnection): void {
    conn.owner = null;
    const s = this.upstream.settings;
    if (conn.closed || conn.requests >= s.keepaliveMaxRequests || s.keepaliveMaxIdle === 0) {
      conn.destroy();
      return;
    }
    let stack = this.idle.get(conn.endpoint);
    if (stack === undefined) {
      stack = [];
      this.idle.set(conn.endpoint, stack);
    }
    if (stack.length >= s.keepaliveMaxIdle) {
      conn.destroy();
      return;
    }
    conn.idleSince = Date.now();
    stack.push(conn);
    this.scheduleSweep();
  }

  tlsFailed(conn: UpstreamConnection, err: NodeJS.ErrnoException): void {
    this.upstream.tlsFailed(conn.endpoint, err);
  }

  forget(conn: UpstreamConnection): void {
    const stack = this.idle.get(conn.endpoint);
    if (stack === undefined) return;
    const i = stack.indexOf(conn);
    if (i >= 0) stack.splice(i, 1);
  }

  private flushedOpened = 0;
  private flushedReused = 0;

  /** Adds what happened since the last scrape to the counters (no counter call per request). */
  refreshMetrics(): void {
    this.newCounter.inc(this.opened - this.flushedOpened);
    this.reusedCounter.inc(this.reusedRequests - this.flushedReused);
    this.flushedOpened = this.opened;
    this.flushedReused = this.reusedRequests;
  }

  idleCount(): number {
    let n = 0;
    for (const stack of this.idle.values()) n += stack.length;
    return n;
  }

  /** For `/stats` (`http_pool` of the upstream). */
  stats(): Record<string, number> {
    return {
      idle: this.idleCount(),
      opened: this.opened,
      reused_requests: this.reusedRequests,
      pending: this.pending,
    };
  }

  /** Queue a request for capacity; false when `max_pending` are already waiting. */
  wait(w: PoolWaiter): boolean {
    if (this.waiters.length >= this.upstream.settings.breaker.maxPending) return false;
    this.waiters.push(w);
    return true;
  }

  unwait(w: PoolWaiter): void {
    const i = this.waiters.indexOf(w);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  /** Capacity was freed (an exchange released its endpoint). */
  wakeOne(): void {
    const w = this.waiters.shift();
    w?.wake();
  }

  get pending(): number {
    return this.waiters.length;
  }

  close(): void {
    for (const stack of this.idle.values()) for (const c of stack) c.destroy();
    this.idle.clear();
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
  }

  private scheduleSweep(): void {
    if (this.sweepTimer !== null) return;
    const every = Math.max(10, Math.min(1000, Math.floor(this.upstream.settings.keepaliveIdleTimeoutMs / 4)));
    this.sweepTimer = setInterval(() => this.sweep(), every);
    this.sweepTimer.unref();
  }

  private sweep(): void {
    const now = Date.now();
    const limit = this.upstream.settings.keepaliveIdleTimeoutMs;
    let left = 0;
    for (const stack of this.idle.values()) {
      // oldest first: the bottom of the LIFO stack
      while (stack.length > 0 && now - (stack[0] as UpstreamConnection).idleSince >= limit) {
        (stack.shift() as UpstreamConnection).destroy();
      }
      left += stack.length;
    }
    if (left === 0 && this.sweepTimer !== null) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = null;
    }
  }
}

function noop(): void {}

const pools = new WeakMap<Upstream, HttpPool>();

/** The pool of an upstream (created on first use; it lives as long as the upstream). */
export function poolOf(upstream: Upstream): HttpPool {
  let pool = pools.get(upstream);
  if (pool === undefined) {
    pool = new HttpPool(upstream);
    pools.set(upstream, pool);
  }
  return pool;
}

/** The pool of an upstream if one was ever used. */
export function existingPool(upstream: Upstream): HttpPool | undefined {
  return pools.get(upstream);
}
