/**
 * An exchange's deadlines between events, checked by the listener's sweep (no timer per
 * request): when the request was fully sent (for `response_header`), and how long its byte
 * counters have not moved (for the request body's `client_idle` and the response's `idle`).
 */
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
}
