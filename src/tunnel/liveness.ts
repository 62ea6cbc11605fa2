/**
 * A session's liveness (src/tunnel/SPEC.md, "Liveness"): a PING every interval, any received
 * frame counts as alive, dead after `misses` silent intervals (30 s at most: the read-deadline
 * backstop). The PING tick alone would notice up to one interval late, so when the limit falls
 * before the next tick a one-off timer checks at the limit itself. A jump of the wall clock
 * against the monotonic one (sleep/resume) gives the peer a fresh chance and PINGs at once.
 */

/** The contract's backstop: a session silent this long is dead whatever the PING settings. */
export const READ_DEADLINE_MS = 30_000;

export class Liveness {
  private lastFrameAt = Date.now();
  private lastTickWall = Date.now();
  private lastTickMono = performance.now();
  private readonly timer: NodeJS.Timeout;
  private deadlineTimer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    readonly intervalMs: number,
    private readonly misses: number,
    private readonly onPing: () => void,
    /** Called once, with how long the peer was silent. */
    private readonly onDead: (silentMs: number) => void,
  ) {
    this.timer = setInterval(() => this.tick(), intervalMs);
    this.timer.unref();
  }

  /** A frame arrived. */
  seen(now: number): void {
    this.lastFrameAt = now;
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.deadlineTimer !== null) clearTimeout(this.deadlineTimer);
  }

  private tick(): void {
    const wall = Date.now();
    const mono = performance.now();
    const jumped = Math.abs(wall - this.lastTickWall - (mono - this.lastTickMono)) > this.intervalMs;
    this.lastTickWall = wall;
    this.lastTickMono = mono;
    if (jumped) this.lastFrameAt = wall; // a sleep/resume: give the peer a fresh chance
    if (this.check(wall)) this.onPing();
  }

  private check(now: number): boolean {
    const limit = Math.min(this.intervalMs * this.misses, READ_DEADLINE_MS);
    const silent = now - this.lastFrameAt;
    if (silent >= limit) {
      this.stop();
      this.onDead(silent);
      return false;
    }
    if (silent + this.intervalMs > limit && this.deadlineTimer === null) {
      this.deadlineTimer = setTimeout(() => {
        this.deadlineTimer = null;
        if (!this.stopped) this.check(Date.now());
      }, limit - silent);
      this.deadlineTimer.unref();
    }
    return true;
  }
}
