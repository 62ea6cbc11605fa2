/**
 * What one exchange holds on its upstream, each taken and given back exactly once:
 * - its place in the upstream's `activeRequests` (from `admit` to `close`);
 * - the circuit breaker's admission, and the verdict it owes it (`judge`, or `abandon` when the
 *   client leaves first, or when it ends with no attempt judged: no server could be picked, the
 *   request body failed; a half-open probe left without either would keep the breaker refusing
 *   every request for good);
 * - the server of the current attempt (`acquire` … `release`, which also wakes the pool's queue);
 * - the attempt count, and its place in the retry budget's `activeRetries` once it retries.
 */
import { metrics } from '../metrics/catalog.js';
import type { Admission } from '../upstream/circuit-breaker.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { Upstream } from '../upstream/upstream.js';
import type { HttpPool } from './pool.js';

export class UpstreamAccount {
  /** Tries on a server (connects included). */
  attempts = 0;
  /** The server of the current (or the last) attempt. */
  endpoint: Endpoint | null = null;
  /** Counted in the upstream's retries in flight. */
  retrying = false;
  private acquired = false;
  private admission: Admission = 'normal';
  private admitted = false;
  /** The breaker heard about this exchange (an attempt judged, or its admission given back). */
  private heard = false;

  constructor(
    private readonly upstream: Upstream,
    private readonly pool: HttpPool,
    /** When the exchange started (`performance.now()`): successes report their latency from it. */
    private readonly startedAt: number,
  ) {}

  /** Counts the request in; false when the circuit breaker refuses it. */
  admit(now: number): boolean {
    this.admitted = true;
    this.upstream.activeRequests++;
    this.admission = this.upstream.breaker.admit(now);
    return this.admission !== 'refused';
  }

  /**
   * An attempt on `e` begins (a retry after the first). `replay`: the keep-alive race's replay of
   * the current attempt on a fresh connection, which is neither an attempt nor a retry.
   */
  acquire(e: Endpoint, replay = false): void {
    const up = this.upstream;
    if (!replay) {
      this.attempts++;
      if (this.attempts > 1) metrics.retries.labels(up.name).inc();
    }
    this.endpoint = e;
    up.acquire(e);
    this.acquired = true;
  }

  /** The attempt's server is given back (once), and a request queued for capacity may go. */
  release(): void {
    if (!this.acquired || this.endpoint === null) return;
    this.acquired = false;
    this.upstream.release(this.endpoint);
    this.pool.wakeOne();
  }

  /** Passive health and the circuit breaker hear how the attempt on `endpoint` went. */
  judge(ok: boolean, now: number): void {
    const e = this.endpoint;
    if (e === null) return;
    if (ok) e.recordSuccess(performance.now() - this.startedAt);
    else e.recordFailure(now);
    this.heard = true;
    this.upstream.breaker.record(this.admission, ok, now);
  }

  /** No verdict (the client left, or the exchange ended before any): the admission is given back. */
  abandon(): void {
    if (this.heard) return;
    this.heard = true;
    this.upstream.breaker.abandon(this.admission);
  }

  /** The exchange is retrying: it counts in the retry budget's retries in flight (once). */
  enterRetry(): void {
    if (this.retrying) return;
    this.retrying = true;
    this.upstream.activeRetries++;
  }

  /** The exchange ended: out of `activeRequests` (if it was admitted) and of `activeRetries`. */
  close(): void {
    if (this.admitted) {
      this.admitted = false;
      this.upstream.activeRequests--;
      this.abandon();
    }
    if (this.retrying) {
      this.retrying = false;
      this.upstream.activeRetries--;
    }
  }
}
