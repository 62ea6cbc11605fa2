/**
 * Idle expiry without per-chunk timer work (undici's coarse timers): a periodic sweep compares
 * each item's activity counter with the previous sweep and expires the ones that have not moved
 * for the idle timeout. Precision: between idle and idle + one sweep period.
 */
export interface IdleTracked {
  /**
   * A number that changes whenever there was traffic (bytes or datagrams moved), or null when
   * something else enforces this item's idle timeout (the native data path): the sweep skips it.
   */
  activity(): number | null;
  lastActivity: number;
  idleMs: number;
}

/** Sweep every idle/4, at least 10 ms, at most 1 s; 0 when idle expiry is off. */
export function sweepPeriod(idleTimeoutMs: number): number {
  return idleTimeoutMs === 0 ? 0 : Math.max(10, Math.min(1000, Math.floor(idleTimeoutMs / 4)));
}

export function sweepIdle<T extends IdleTracked>(
  items: Iterable<T>,
  elapsedMs: number,
  idleTimeoutMs: number,
  expire: (item: T) => void,
): void {
  // collect first: `expire` may remove items from the collection being swept
  const expired: T[] = [];
  for (const item of items) {
    const a = item.activity();
    if (a === null) continue;
    if (a !== item.lastActivity) {
      item.lastActivity = a;
      item.idleMs = 0;
      continue;
    }
    item.idleMs += elapsedMs;
    if (item.idleMs >= idleTimeoutMs) expired.push(item);
  }
  for (const item of expired) expire(item);
}
