/**
 * An exchange's deadlines between events, checked by the listener's sweep (no timer per
 * request): when the request was fully sent (for `response_header`), and how long its byte
 * counters have not moved (for the request body's `client_idle` and the response's `idle`, or the
 * other side's limit when one side waits on the other).
 */
import type { ErrorCode } from '../errors.js';

export class StallClock {
  /** When the whole request was written upstream (ms, `Date.now()`); 0 until then. */
  requestSentAt = 0;
  private mark = -1;
  private movedAt = 0;

  /**
   * True when `mark` (bytes moved so far) stood still for `limitMs` up to `now`. A mark that moved
   * since the last look restarts the clock. `limitMs` 0: never stalls.
   */
  stalled(mark: number, now: number, limitMs: number): boolean {
    if (mark !== this.mark) {
      this.mark = mark;
      this.movedAt = now;
      return false;
    }
    return limitMs > 0 && now - this.movedAt >= limitMs;
  }

  /**
   * The deadline passed at `now`, if any. `held`: zipline holds one side because the other takes
   * no more, so the stall is the other side's. Waiting for the response: while the request body is
   * still being sent, the client's `client_idle`, or the upstream's `idle` when it is the upstream
   * that takes no more (`held`: the client is paused for it, nginx `proxy_send_timeout`; an `idle`
   * of 0, meant for quiet response streams, leaves `client_idle` as its bound); then
   * `response_header` from when it was sent. Streaming the response: the body's `idle`, or
   * `client_idle` when it is the client that takes no more (`held`: the upstream is paused for it,
   * nginx `send_timeout`; a `client_idle` of 0 leaves `idle` as its bound).
   */
  due(
    phase: 'waiting' | 'streaming',
    mark: number,
    now: number,
    clientIdleMs: number,
    responseHeaderMs: number,
    idleMs: number,
    held: boolean,
  ): ErrorCode | null {
    if (phase === 'streaming') {
      if (!held) return this.stalled(mark, now, idleMs) ? 'ZL_UPSTREAM_IDLE_TIMEOUT' : null;
      const limit = clientIdleMs > 0 ? clientIdleMs : idleMs;
      return this.stalled(mark, now, limit) ? 'ZL_CLIENT_IDLE_TIMEOUT' : null;
    }
    if (this.requestSentAt === 0 && held) {
      const limit = idleMs > 0 ? idleMs : clientIdleMs;
      return this.stalled(mark, now, limit) ? 'ZL_UPSTREAM_IDLE_TIMEOUT' : null;
    }
    if (this.requestSentAt === 0)
      return this.stalled(mark, now, clientIdleMs) ? 'ZL_HTTP_BODY_TIMEOUT' : null;
    // `responseHeaderMs` 0: no deadline
    return responseHeaderMs > 0 && now - this.requestSentAt >= responseHeaderMs
      ? 'ZL_UPSTREAM_RESPONSE_TIMEOUT'
      : null;
  }
}
