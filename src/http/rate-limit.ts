/**
 * Request rate limits (`listeners[].rate_limit`, `routes[].rate_limit`): nginx `limit_req` with
 * `burst=N nodelay`, Envoy's local rate limit, Caddy's `rate_limit`. Each key (a client address,
 * or a header's value) may send `burst` requests at once and then `rate` per second; a request
 * over that is answered 429 with `Retry-After` and never reaches a server.
 *
 * GCRA (the generic cell rate algorithm, a token bucket kept as one number per key): the key's
 * "theoretical arrival time" moves one interval (1/rate) per request admitted; a request is over
 * the limit when that time would run more than `burst` intervals ahead of now. No timers, no
 * per-request allocation beyond the key string; a key whose time has passed holds no state that
 * matters, so the table is bounded by `max_keys` (and each key by 64 characters: a longer header
 * value is kept as its SHA-256): when full, expired keys are swept (at most once a second) and
 * otherwise the oldest is forgotten (it starts over with a full burst).
 */
import { createHash } from 'node:crypto';
import { headerValue, type RequestHead } from './parser/request-head.js';

export interface RateLimitConfig {
  /** Requests per second (schema: a number, or `N/s`, `N/m`, `N/h`). */
  readonly rate: number;
  readonly burst?: number | undefined;
  /** `client_ip` or `header:NAME` (requests without that header: by client address). */
  readonly key: string;
  readonly max_keys: number;
}

const SWEEP_EVERY_MS = 1000;

/** Longer header values are keyed by their SHA-256 (bounds the table's memory per key). */
const MAX_KEY_CHARS = 64;

export class RateLimiter {
  readonly intervalMs: number;
  /** How far ahead of now a key's time may run: `burst` intervals. */
  private readonly toleranceMs: number;
  /** Header name (lower case) whose value is the key, or null for the client address. */
  private readonly header: string | null;
  private readonly times = new Map<string, number>();
  private sweptAt = 0;

  constructor(
    readonly cfg: RateLimitConfig,
    /** The burst used (the default: one second's worth of `rate`, at least 1). */
    readonly burst = cfg.burst ?? Math.max(1, Math.ceil(cfg.rate)),
  ) {
    this.intervalMs = 1000 / cfg.rate;
    this.toleranceMs = this.burst * this.intervalMs;
    this.header = cfg.key.startsWith('header:') ? cfg.key.slice(7).toLowerCase() : null;
  }

  /** Same settings: a reload keeps this limiter and what it counted. */
  sameAs(cfg: RateLimitConfig): boolean {
    const c = this.cfg;
    return c.rate === cfg.rate && c.burst === cfg.burst && c.key === cfg.key && c.max_keys === cfg.max_keys;
  }

  keyOf(head: RequestHead, clientIp: string): string {
    if (this.header === null) return clientIp;
    const value = headerValue(head, this.header);
    if (value === undefined) return clientIp;
    // a header value may be up to max_header_bytes long: the table keeps a digest of long ones
    return value.length <= MAX_KEY_CHARS ? value : `#${createHash('sha256').update(value).digest('base64')}`;
  }

  /** Admits one request of `key` at `now` (ms, monotonic): 0, or the ms until one would be. */
  take(key: string, now: number): number {
    const last = this.times.get(key);
    const next = (last === undefined || last < now ? now : last) + this.intervalMs;
    const over = next - now - this.toleranceMs;
    if (over > 1e-6) return over;
    if (last === undefined && this.times.size >= this.cfg.max_keys) this.makeRoom(now);
    this.times.set(key, next);
    return 0;
  }

  /** Keys holding state (for tests and stats). */
  get size(): number {
    return this.times.size;
  }

  private makeRoom(now: number): void {
    if (now - this.sweptAt >= SWEEP_EVERY_MS) {
      this.sweptAt = now;
      for (const [k, t] of this.times) if (t <= now) this.times.delete(k);
    }
    if (this.times.size >= this.cfg.max_keys) {
      const oldest = this.times.keys().next();
      if (oldest.done !== true) this.times.delete(oldest.value);
    }
  }
}

/**
 * The `Retry-After` of the last request refused (whole seconds, at least 1): set by `admitted`
 * and read by the error response written right after, in the same call.
 */
let retryAfterS = 1;

export function lastRetryAfter(): number {
  return retryAfterS;
}

/** Whether the request may go on; when not, `lastRetryAfter()` says when to come back. */
export function admitted(limiter: RateLimiter, head: RequestHead, clientIp: string): boolean {
  const waitMs = limiter.take(limiter.keyOf(head, clientIp), performance.now());
  if (waitMs === 0) return true;
  retryAfterS = Math.max(1, Math.ceil(waitMs / 1000));
  return false;
}
