/**
 * An upstream (an Envoy cluster): its endpoints, balancer, DNS re-resolution, active health
 * checker and limits. Shared by every listener that names it; the L4 proxy, the HTTP proxy and
 * the tunnel relay all pick endpoints through `pick()`.
 *
 * Endpoint objects are kept across DNS changes and reloads for as long as their (server, address)
 * pair exists, so counters, passive-health and active-health state survive both.
 */
import { lookup as dnsLookup } from 'node:dns';
import { isIP } from 'node:net';
import { type Balancer, createBalancer, type PickContext } from '../balancer/index.js';
import { nowMs } from '../core/clock.js';
import type { ErrorCode } from '../errors.js';
import { HealthChecker } from '../health/checker.js';
import type { Logger } from '../log/logger.js';
import { metrics } from '../metrics/catalog.js';
import { CircuitBreaker } from './circuit-breaker.js';
import { Endpoint } from './endpoint.js';
import type { ServerSpec, UpstreamSettings } from './settings.js';

export type LookupAll = (host: string, cb: (err: Error | null, addresses: string[]) => void) => void;

export const systemLookup: LookupAll = (host, cb) => {
  dnsLookup(host, { all: true }, (err, addrs) => cb(err, err ? [] : addrs.map((a) => a.address)));
};

export interface UpstreamOptions {
  readonly log: Logger;
  readonly lookup?: LookupAll;
}

const NO_TRIED: readonly Endpoint[] = Object.freeze([]);
const MIN_RETRY_CONCURRENCY = 3;
/** A resolution slower than this counts as failed (the last good addresses stay). */
export const RESOLVE_TIMEOUT_MS = 5000;

export class Upstream {
  settings: UpstreamSettings;
  endpoints: readonly Endpoint[] = [];
  /** Active connections across all endpoints (for `circuit_breaker.max_connections`). */
  active = 0;
  /** HTTP requests in flight through this upstream (for the retry budget). */
  activeRequests = 0;
  /** HTTP retries in flight (waiting out a backoff or attempting). */
  activeRetries = 0;
  readonly breaker: CircuitBreaker;
  private balancer: Balancer;
  /** The backup servers' own (null without backups): picked from only when `balancer` finds none. */
  private backupBalancer: Balancer | null = null;
  private checker: HealthChecker | null = null;
  private resolveTimer: NodeJS.Timeout | null = null;
  /** Resolved addresses per configured server string. */
  private readonly resolved = new Map<string, readonly string[]>();
  private readonly lookup: LookupAll;
  private readonly log: Logger;
  private closed = false;
  /** Reused pick context: picks never allocate. */
  private readonly ctx: PickContext = { hash: 0, tried: NO_TRIED, now: 0 };

  constructor(settings: UpstreamSettings, options: UpstreamOptions) {
    this.settings = settings;
    this.log = options.log;
    this.lookup = options.lookup ?? systemLookup;
    this.balancer = createBalancer(settings.policy);
    this.breaker = new CircuitBreaker(settings.breaker, (state) => {
      metrics.circuitOpen.labels(settings.name).set(state === 'open' ? 1 : 0);
      this.log.warn({ upstream: settings.name, state }, `circuit breaker ${state.replace('_', '-')}`);
    });
    this.warnUnverified();
  }

  private tlsWarnedAt = 0;

  /**
   * A TLS handshake with `e` failed (or its server alerted right after it): the reason OpenSSL
   * gave is what an operator needs (an expired or unknown certificate, a name mismatch, a plain
   * server behind `tls`), so it is logged, at most once every 10 s per upstream.
   */
  tlsFailed(e: Endpoint, err: NodeJS.ErrnoException): void {
    const now = Date.now();
    if (now - this.tlsWarnedAt < 10_000) return;
    this.tlsWarnedAt = now;
    this.log.warn(
      { upstream: this.name, server: e.address, code: 'ZL_UPSTREAM_TLS', reason: err.code, err: err.message },
      'TLS with the server failed (more within 10 s are not logged)',
    );
  }

  private warnUnverified(): void {
    if (this.settings.tls?.verify !== false) return;
    this.log.warn(
      { upstream: this.settings.name },
      'tls.verify is false: the certificates of its servers are not checked (for tests only)',
    );
  }

  /**
   * The retry budget (Envoy `retry_budget`): retries in flight stay within `retry.budget` of the
   * requests in flight, but at least 3 may always run so a quiet upstream can still fail over.
   */
  retryAllowed(): boolean {
    const cap = Math.max(MIN_RETRY_CONCURRENCY, Math.floor(this.settings.retryBudget * this.activeRequests));
    return this.activeRetries < cap;
  }

  get name(): string {
    return this.settings.name;
  }

  /** Resolves names, starts re-resolution and health checks. Resolves once every server was tried. */
  async start(): Promise<void> {
    await this.resolveAll();
    this.scheduleResolve();
    this.restartChecker();
  }

  /**
   * Picks an endpoint for one attempt, or says why none can be had. `tried` are excluded.
   * The caller must `acquire()` on the result.
   */
  pick(hash: number, tried: readonly Endpoint[] = NO_TRIED): Endpoint | ErrorCode {
    const now = nowMs();
    if (this.active >= this.settings.maxConnections) return 'ZL_UPSTREAM_OVER_LIMIT';
    const ctx = this.ctx;
    ctx.hash = hash;
    ctx.tried = tried;
    ctx.now = now;
    const e = this.balancer.pick(ctx) ?? this.backupBalancer?.pick(ctx);
    ctx.tried = NO_TRIED;
    if (e !== undefined) return e;
    return this.endpoints.some((x) => x.isUp(now) && !tried.includes(x))
      ? 'ZL_UPSTREAM_OVER_LIMIT'
      : 'ZL_UPSTREAM_UNAVAILABLE';
  }

  acquire(e: Endpoint): void {
    e.acquire();
    this.active++;
  }

  release(e: Endpoint): void {
    e.release();
    this.active--;
  }

  /** True when at least one endpoint is in rotation (`/readyz`). */
  isReady(now = Date.now()): boolean {
    return this.endpoints.some((e) => e.isUp(now));
  }

  /** Why it is not ready (`/readyz`): a name that never resolved has no server to be healthy. */
  whyNotReady(): string {
    return this.endpoints.length === 0 ? 'no server address resolved' : 'no healthy server';
  }

  /**
   * Applies a new config of the same name (reload). Endpoints whose server and address stay are
   * kept with their state; the balancer is rebuilt only when the policy changes.
   */
  apply(settings: UpstreamSettings): void {
    const prev = this.settings;
    this.settings = settings;
    if (settings.policy !== prev.policy) {
      this.balancer = createBalancer(settings.policy);
      this.backupBalancer = null;
    }
    this.breaker.update(settings.breaker);
    const servers = new Set(settings.servers.map((s) => s.server));
    for (const key of [...this.resolved.keys()]) if (!servers.has(key)) this.resolved.delete(key);
    for (const spec of settings.servers)
      if (isIP(spec.host) !== 0) this.resolved.set(spec.server, [spec.host]);
    this.rebuildEndpoints();
    if (settings.resolveIntervalMs !== prev.resolveIntervalMs) this.scheduleResolve();
    void this.resolveAll();
    // a new TLS context (same paths, maybe new files) is a new checker too
    if (JSON.stringify(settings.health) !== JSON.stringify(prev.health) || settings.tls !== prev.tls)
      this.restartChecker();
    this.warnUnverified();
  }

  close(): void {
    this.closed = true;
    this.checker?.stop();
    this.checker = null;
    if (this.resolveTimer !== null) clearInterval(this.resolveTimer);
    this.resolveTimer = null;
  }

  private restartChecker(): void {
    this.checker?.stop();
    this.checker = null;
    const health = this.settings.health;
    if (health === undefined || this.closed) {
      for (const e of this.endpoints) e.activeHealthy = true;
      return;
    }
    this.checker = new HealthChecker(this.name, health, () => this.endpoints, this.log);
    this.checker.start();
  }

  private scheduleResolve(): void {
    if (this.resolveTimer !== null) clearInterval(this.resolveTimer);
    this.resolveTimer = null;
    const ms = this.settings.resolveIntervalMs;
    if (ms === 0 || this.closed || this.settings.servers.every((s) => isIP(s.host) !== 0)) return;
    this.resolveTimer = setInterval(() => void this.resolveAll(), ms);
    this.resolveTimer.unref();
  }

  private async resolveAll(): Promise<void> {
    await Promise.all(this.settings.servers.map((spec) => this.resolveOne(spec)));
    if (!this.closed) this.rebuildEndpoints();
  }

  private resolveOne(spec: ServerSpec): Promise<void> {
    if (isIP(spec.host) !== 0) {
      this.resolved.set(spec.server, [spec.host]);
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      // getaddrinfo can hang for resolv.conf's whole retry budget: bound it, keep what we had
      let done = false;
      const timer = setTimeout(() => {
        done = true;
        metrics.dnsResolutions.labels(this.name, 'timeout').inc();
        this.log.warn({ upstream: this.name, server: spec.server }, 'DNS resolution timed out');
        resolve();
      }, RESOLVE_TIMEOUT_MS);
      this.lookup(spec.host, (err, addresses) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err !== null || addresses.length === 0) {
          metrics.dnsResolutions.labels(this.name, 'failure').inc();
          // keep what we had: a DNS outage must not empty a working pool
          this.log.warn(
            { upstream: this.name, server: spec.server, err: err?.message },
            'DNS resolution failed',
          );
        } else {
          metrics.dnsResolutions.labels(this.name, 'success').inc();
          this.resolved.set(spec.server, [...new Set(addresses)].sort());
        }
        resolve();
      });
    });
  }

  private rebuildEndpoints(): void {
    const old = new Map(this.endpoints.map((e) => [`${e.server}|${e.address}`, e]));
    const next: Endpoint[] = [];
    for (const spec of this.settings.servers) {
      for (const ip of this.resolved.get(spec.server) ?? []) {
        const fresh = new Endpoint(spec.server, ip, spec.port, spec.settings);
        const kept = old.get(`${spec.server}|${fresh.address}`);
        if (kept !== undefined) kept.settings = spec.settings;
        next.push(kept ?? fresh);
      }
    }
    const lone = next.length === 1;
    for (const e of next) e.lone = lone;
    for (const [key, e] of old) {
      if (!next.includes(e)) {
        metrics.upstreamHealthy.remove(this.name, e.address);
        metrics.upstreamActive.remove(this.name, e.address);
        this.log.info({ upstream: this.name, server: key }, 'endpoint removed');
      }
    }
    this.endpoints = next;
    const backups = next.filter((e) => e.settings.backup);
    this.balancer.update(backups.length === 0 ? next : next.filter((e) => !e.settings.backup));
    if (backups.length === 0) this.backupBalancer = null;
    else {
      this.backupBalancer ??= createBalancer(this.settings.policy);
      this.backupBalancer.update(backups);
    }
  }

  /** Writes point-in-time gauges (called before a metrics scrape). */
  refreshGauges(now = Date.now()): void {
    for (const e of this.endpoints) {
      metrics.upstreamHealthy.labels(this.name, e.address).set(e.isUp(now) ? 1 : 0);
      metrics.upstreamActive.labels(this.name, e.address).set(e.active);
    }
  }

  stats(now = Date.now()): Record<string, unknown> {
    return {
      balance: this.settings.policy,
      active: this.active,
      requests_active: this.activeRequests,
      retries_active: this.activeRetries,
      circuit: { state: this.breaker.state, opened: this.breaker.opened },
      max_connections: this.settings.maxConnections,
      health_check: this.settings.health?.type ?? null,
      servers: this.endpoints.map((e) => ({
        server: e.server,
        address: e.address,
        state: e.state(now),
        weight: e.weight,
        backup: e.settings.backup,
        active: e.active,
        total: e.total,
        failures: e.failures,
        ewma_latency_ms: Math.round(e.ewmaLatencyMs * 1000) / 1000,
        failure_ewma: Math.round(e.failureEwma * 1000) / 1000,
        down_for_ms: e.lone ? 0 : Math.max(0, e.downUntil - now),
        health: {
          healthy: e.activeHealthy,
          passes: e.checkPasses,
          fails: e.checkFails,
          last_error: e.lastCheckError,
        },
      })),
    };
  }
}
