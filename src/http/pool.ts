/**
 * The keep-alive pool of one upstream, shared by every HTTP listener that routes to it (nginx
 * `upstream { keepalive }`, undici `Pool`): per endpoint a LIFO stack of idle connections, each
 * closed after `idle_timeout` idle or `max_requests` requests.
 *
 * How many idle connections a server keeps follows its demand, as HAProxy's idle pools do: at
 * least `keepalive.max_idle`, and as many as it had requests in flight at once (its peak) in the
 * current or the previous second. With a fixed cap below the concurrency (200 clients, or a few
 * HTTP/2 clients with many streams each, against nginx's and our default of 32) every burst of
 * responses closed the connections the next burst of requests then opened again: connect + close
 * per request and TIME_WAIT piling up (`wrk -c200`: 15.7 k req/s against 44.6 k at -c20). Once the
 * demand has been gone for a second or two, the surplus beyond `max_idle` is closed, oldest first.
 *
 * Requests wait here (FIFO, at most `circuit_breaker.max_pending`, each for at most the connect
 * timeout) when the upstream is at `circuit_breaker.max_connections` or every server at its own
 * `max_connections`.
 */
import type { Socket } from 'node:net';
import { nowMs } from '../core/clock.js';
import { type ErrorCode, upstreamConnectCode } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { Upstream } from '../upstream/upstream.js';
import { H2Sessions } from './h2-upstream/sessions.js';
import { idleSweepTimer } from './idle-sweep.js';
import { type ConnectionHome, connectUpstream, UpstreamConnection } from './upstream-connection.js';

export type ConnectCallback = (conn: UpstreamConnection | null, code: ErrorCode | null) => void;

export interface PoolWaiter {
  /** Capacity was freed: try again. */
  wake(): void;
}

/** Demand is measured in windows of this length; the surplus goes after one to two quiet windows. */
const DEMAND_WINDOW_MS = 1000;

/** One server's idle connections (LIFO) and its recent demand. */
interface IdleStack {
  readonly conns: UpstreamConnection[];
  /** Most requests in flight to the server at once in this window, and in the previous one. */
  peak: number;
  lastPeak: number;
}

export class HttpPool implements ConnectionHome {
  private readonly idle = new Map<Endpoint, IdleStack>();
  private windowStart = Date.now();
  private readonly waiters: PoolWaiter[] = [];
  private sweepTimer: NodeJS.Timeout | null = null;
  /** Connections opened over the pool's life, and requests that reused one. */
  opened = 0;
  reusedRequests = 0;
  private readonly newCounter;
  private readonly reusedCounter;

  /** The HTTP/2 sessions of an `http_version: 2` upstream (created on first use). */
  private h2sessions: H2Sessions | null = null;

  constructor(readonly upstream: Upstream) {
    this.newCounter = metrics.upstreamRequests.labels(upstream.name, 'new');
    this.reusedCounter = metrics.upstreamRequests.labels(upstream.name, 'reused');
  }

  /** An idle connection to `e` (unless `fresh`), else a new one; `cb` gets it or a connect error code. */
  connection(e: Endpoint, fresh: boolean, cb: ConnectCallback): () => void {
    const stack = this.stackOf(e);
    // the exchange asking is already counted in `active`
    if (e.active > stack.peak) stack.peak = e.active;
    if (!fresh) {
      const conns = stack.conns;
      while (conns.length > 0) {
        const conn = conns.pop() as UpstreamConnection;
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
    const stack = this.stackOf(conn.endpoint);
    if (stack.conns.length >= Math.max(s.keepaliveMaxIdle, stack.peak, stack.lastPeak)) {
      conn.destroy();
      return;
    }
    conn.idleSince = nowMs();
    stack.conns.push(conn);
    this.scheduleSweep();
  }

  private stackOf(e: Endpoint): IdleStack {
    let stack = this.idle.get(e);
    if (stack === undefined) {
      stack = { conns: [], peak: 0, lastPeak: 0 };
      this.idle.set(e, stack);
    }
    return stack;
  }

  tlsFailed(conn: UpstreamConnection, err: NodeJS.ErrnoException): void {
    this.upstream.tlsFailed(conn.endpoint, err);
  }

  forget(conn: UpstreamConnection): void {
    const conns = this.idle.get(conn.endpoint)?.conns;
    if (conns === undefined) return;
    const i = conns.indexOf(conn);
    if (i >= 0) conns.splice(i, 1);
  }

  private flushedOpened = 0;
  private flushedReused = 0;

  /** Adds what happened since the last scrape to the counters (no counter call per request). */
  refreshMetrics(): void {
    const opened = this.opened + (this.h2sessions?.opened ?? 0);
    const reused = this.reusedRequests + (this.h2sessions?.reusedRequests ?? 0);
    this.newCounter.inc(opened - this.flushedOpened);
    this.reusedCounter.inc(reused - this.flushedReused);
    this.flushedOpened = opened;
    this.flushedReused = reused;
  }

  idleCount(): number {
    let n = 0;
    for (const stack of this.idle.values()) n += stack.conns.length;
    return n;
  }

  /** For `/stats` (`http_pool` of the upstream). */
  stats(): Record<string, number> {
    const h2 = this.h2sessions;
    if (h2 !== null) {
      return {
        h2_sessions: h2.size,
        opened: h2.opened,
        reused_requests: h2.reusedRequests,
        pending: this.pending,
      };
    }
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

  get h2(): H2Sessions {
    this.h2sessions ??= new H2Sessions(this.upstream);
    return this.h2sessions;
  }

  close(): void {
    this.h2sessions?.close();
    for (const stack of this.idle.values()) for (const c of stack.conns) c.destroy();
    this.idle.clear();
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
  }

  private scheduleSweep(): void {
    if (this.sweepTimer !== null) return;
    this.sweepTimer = idleSweepTimer(this.upstream.settings.keepaliveIdleTimeoutMs, () => this.sweep());
  }

  private sweep(): void {
    const now = Date.now();
    const s = this.upstream.settings;
    const limit = s.keepaliveIdleTimeoutMs;
    const rotate = now - this.windowStart >= DEMAND_WINDOW_MS;
    if (rotate) this.windowStart = now;
    let left = 0;
    // deleting the entry being visited is safe in a Map's for..of
    for (const [e, stack] of this.idle) {
      if (rotate) {
        // (after a time without sweeps, i.e. without idle connections, `peak` is the demand since
        // the last one: at worst a surplus is kept one window longer)
        stack.lastPeak = stack.peak;
        stack.peak = e.active;
      }
      const conns = stack.conns;
      const keep = Math.max(s.keepaliveMaxIdle, stack.peak, stack.lastPeak);
      // oldest first: the bottom of the LIFO stack (the demand's surplus, then the expired)
      while (conns.length > keep) (conns.shift() as UpstreamConnection).destroy();
      while (conns.length > 0 && now - (conns[0] as UpstreamConnection).idleSince >= limit) {
        (conns.shift() as UpstreamConnection).destroy();
      }
      left += conns.length;
      // no connection and no demand for two windows: forget it (servers come and go with DNS)
      if (conns.length === 0 && stack.peak === 0 && stack.lastPeak === 0) this.idle.delete(e);
    }
    // runs while a server has connections or recent demand (each forgotten after two quiet windows)
    if (left === 0 && this.idle.size === 0 && this.sweepTimer !== null) {
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
