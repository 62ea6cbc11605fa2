/**
 * Async jobs run one at a time, in the order they were asked for: the reloads of one process
 * (SIGHUP, `POST /reload`), which would otherwise interleave at their awaits.
 */
export class Turns {
  /** The job running or last run; the next one starts after it settles. */
  private last: Promise<unknown> = Promise.resolve();

  run<T>(job: () => Promise<T>): Promise<T> {
    const turn = this.last.then(job);
    this.last = turn.catch(() => undefined);
    return turn;
  }
}
