/**
 * The circuit breaker of one upstream (Envoy outlier ejection / Hystrix style, HTTP only):
 * outcomes are counted in a sliding window of `BUCKETS` time buckets; when at least
 * `min_requests` were seen and `failure_ratio` of them failed, the breaker opens and requests
 * fail fast with 503 `ZL_CIRCUIT_OPEN` for `open_for`. Then it is half-open: exactly one request
 * goes through as a probe; its success closes the breaker (with a fresh window), its failure
 * opens it again for another `open_for`.
 *
 * Failures are what the retry policy calls failures (connect failures, resets, timeouts, and the
 * statuses of `retry.on`), counted per attempt.
 */
import type { BreakerSettings } from './settings.js';

export type BreakerState = 'closed' | 'open' | 'half_open';
/** What `admit()` granted: a normal request, the half-open probe, or nothing. */
export type Admission = 'normal' | 'probe' | 'refused';

const BUCKETS = 10;

export class CircuitBreaker {
  state: BreakerState = 'closed';
  openedAt = 0;
  /** Times the breaker opened. */
  opened = 0;
  private probing = false;
  private readonly ok = new Float64Array(BUCKETS);
  private readonly failed = new Float64Array(BUCKETS);
  private readonly bucketAt = new Float64Array(BUCKETS);

  constructor(
    private settings: BreakerSettings,
    private readonly onChange: (state: BreakerState) => void = () => {},
  ) {}

  update(settings: BreakerSettings): void {
    this.settings = settings;
  }

  admit(now: number): Admission {
    if (this.state === 'closed') return 'normal';
    if (this.state === 'open') {
      if (now - this.openedAt < this.settings.openForMs) return 'refused';
      this.set('half_open');
    }
    if (this.probing) return 'refused';
    this.probing = true;
    return 'probe';
  }

  /** The outcome of an attempt admitted as `admission`. */
  record(admission: Admission, success: boolean, now: number): void {
    if (admission === 'probe') {
      this.probing = false;
      if (success) {
        this.ok.fill(0);
        this.failed.fill(0);
        this.set('closed');
      } else {
        this.open(now);
      }
      return;
    }
    if (admission !== 'normal' || this.state !== 'closed') return;
    const width = this.settings.windowMs / BUCKETS;
    const slot = Math.floor(now / width);
    const i = slot % BUCKETS;
    if (this.bucketAt[i] !== slot) {
      this.bucketAt[i] = slot;
      this.ok[i] = 0;
      this.failed[i] = 0;
    }
    if (success) {
      this.ok[i] = (this.ok[i] as number) + 1;
      return;
    }
    this.failed[i] = (this.failed[i] as number) + 1;
    let ok = 0;
    let failed = 0;
    for (let b = 0; b < BUCKETS; b++) {
      if (slot - (this.bucketAt[b] as number) >= BUCKETS) continue; // outside the window
      ok += this.ok[b] as number;
      failed += this.failed[b] as number;
    }
    const total = ok + failed;
    if (total >= this.settings.minRequests && failed / total >= this.settings.failureRatio) this.open(now);
  }

  /** An admitted probe that ended without an outcome (the client left): let another one try. */
  abandon(admission: Admission): void {
    if (admission === 'probe') this.probing = false;
  }

  private open(now: number): void {
    this.openedAt = now;
    this.opened++;
    this.set('open');
  }

  private set(state: BreakerState): void {
    if (state === this.state) return;
    this.state = state;
    this.onChange(state);
  }
}
