/**
 * A listener at `limits.max_connections` closes each new connection at once, and its client sees
 * only a reset. Every one is counted (`zipline_downstream_rejected_total`, code
 * `ZL_LISTENER_OVER_LIMIT`) and, as nginx says "worker_connections are not enough" and HAProxy
 * that a frontend "reached maxconn" in their logs, said as a warning: the first at once, then at
 * most one per listener every 10 s, with how many were refused since the previous line. The admin
 * and `/shm` HTTP servers report theirs the same way (listener `admin`, `shm.http`).
 * (`clients` and `max_connections_per_client` refusals stay at debug: a scanner must not fill the
 * log; client-access.ts.)
 */
import { metrics } from '../metrics/catalog.js';
import type { Logger } from './logger.js';

/** At most one warning per listener this often. */
export const OVER_LIMIT_LOG_EVERY_MS = 10_000;

export class OverLimit {
  private loggedAt = -Infinity;
  private since = 0;

  constructor(
    private readonly listener: string,
    private readonly log: Logger,
    /** The limit now (a reload may change it). */
    private readonly limit: () => number,
    /** The config key that sets it, for the warning. */
    private readonly key = 'limits.max_connections',
  ) {}

  /** One connection was closed because the listener is full. */
  refused(): void {
    metrics.downstreamRejected.labels(this.listener, 'ZL_LISTENER_OVER_LIMIT').inc();
    this.since++;
    const now = Date.now();
    if (now - this.loggedAt < OVER_LIMIT_LOG_EVERY_MS) return;
    this.loggedAt = now;
    this.log.warn(
      {
        listener: this.listener,
        code: 'ZL_LISTENER_OVER_LIMIT',
        max_connections: this.limit(),
        refused: this.since,
      },
      `connections refused: the listener is at ${this.key} (more within 10 s are counted, not logged)`,
    );
    this.since = 0;
  }
}
