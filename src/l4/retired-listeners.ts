/**
 * Listeners a reload or a drain took out of service (they no longer accept), kept while their
 * connections finish. One whose last connection closed is dropped when next looked at (a drain's
 * count, a scrape, `/stats`), its metrics brought up to date first: an HTTP listener's
 * `zipline_requests_active` share goes back to 0 rather than staying as last reported. A new
 * listener may have the same name: both report into the same series, each its own share.
 */
import type { Listener } from './listener.js';

export class RetiredListeners {
  private readonly set = new Set<Listener>();

  add(l: Listener): void {
    this.set.add(l);
    this.prune();
  }

  /** Their open connections and sessions. */
  activeCount(): number {
    this.prune();
    let n = 0;
    for (const l of this.set) n += l.activeCount();
    return n;
  }

  destroyAll(): void {
    for (const l of this.set) l.destroyAll();
  }

  refreshMetrics(): void {
    this.prune();
    for (const l of this.set) l.refreshMetrics();
  }

  /** For `/stats`' `retired_listeners`. */
  stats(): { name: string; active: number }[] {
    this.prune();
    return [...this.set].map((l) => ({ name: l.name, active: l.activeCount() }));
  }

  private prune(): void {
    for (const l of this.set) {
      if (l.activeCount() > 0) continue;
      l.refreshMetrics();
      this.set.delete(l);
    }
  }
}
