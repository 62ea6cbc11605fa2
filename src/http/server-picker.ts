/**
 * Where an exchange's next attempt goes: a server of the upstream not yet tried for this request
 * (at once); once every eligible server was tried, the same ones again after a full-jitter
 * backoff; when the upstream is at its connection limits, a place in the pool's FIFO queue
 * (first attempt only, at most the connect timeout). The outcome goes to the owner.
 */
import type { ErrorCode } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import { fullJitterBackoff } from '../upstream/backoff.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { Upstream } from '../upstream/upstream.js';
import type { HttpPool, PoolWaiter } from './pool.js';

export interface PickOwner {
  /** A server to try now. */
  onPicked(e: Endpoint): void;
  /** Waiting: a backoff, or a place in the pool's queue. */
  onWaiting(state: 'backoff' | 'queued'): void;
  /** No server can be had (the code says why: unavailable, over limit, queue full or timed out). */
  onNoServer(code: ErrorCode): void;
}

/** `tried` before the first pick: shared, never written (the first pick replaces it). */
const NONE_TRIED: Endpoint[] = [];

export class ServerPicker implements PoolWaiter {
  /**
   * Servers tried since the last backoff. Most requests pick once: a one-element array then,
   * not an empty one that `push` would grow to 17 slots (~250 bytes per request).
   */
  private tried: Endpoint[] = NONE_TRIED;
  private waiting: 'backoff' | 'queued' | null = null;
  private backoffRound = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly upstream: Upstream,
    private readonly pool: HttpPool,
    private readonly hash: number,
    private readonly owner: PickOwner,
  ) {}

  /** Picks for the next attempt; `first`: no attempt was made yet (only then may it queue). */
  next(first: boolean): void {
    const up = this.upstream;
    let picked = up.pick(this.hash, this.tried);
    if (typeof picked === 'string' && this.tried.length > 0) {
      const again = up.pick(this.hash);
      if (typeof again !== 'string') {
        // every eligible server was tried: back off, then allow them again
        this.tried.length = 0;
        const s = up.settings;
        this.wait('backoff', fullJitterBackoff(this.backoffRound++, s.backoffBaseMs, s.backoffMaxMs));
        return;
      }
      picked = again;
    }
    if (typeof picked === 'string') {
      if (picked === 'ZL_UPSTREAM_OVER_LIMIT' && first) {
        if (this.pool.wait(this)) {
          this.wait('queued', up.settings.connectTimeoutMs);
          return;
        }
        picked = 'ZL_UPSTREAM_PENDING_LIMIT';
      }
      metrics.upstreamUnavailable.labels(up.name, picked).inc();
      this.owner.onNoServer(picked);
      return;
    }
    if (this.tried === NONE_TRIED) this.tried = [picked];
    else this.tried.push(picked);
    this.owner.onPicked(picked);
  }

  /** @internal capacity was freed while queued (`PoolWaiter`). */
  wake(): void {
    if (this.waiting !== 'queued') return;
    this.cancel();
    this.next(true);
  }

  /** Stops waiting (the exchange ended). */
  cancel(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.waiting === 'queued') this.pool.unwait(this);
    this.waiting = null;
  }

  private wait(state: 'backoff' | 'queued', ms: number): void {
    this.waiting = state;
    this.timer = setTimeout(waited, ms, this);
    this.owner.onWaiting(state);
  }

  /** @internal the backoff ended, or the queue wait timed out. */
  waited(): void {
    this.timer = null;
    const state = this.waiting;
    this.waiting = null;
    if (state === 'backoff') this.next(false);
    else if (state === 'queued') {
      this.pool.unwait(this);
      this.owner.onNoServer('ZL_UPSTREAM_OVER_LIMIT');
    }
  }
}

function waited(p: ServerPicker): void {
  p.waited();
}
