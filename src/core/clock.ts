/**
 * The wall clock (`Date.now()`, ms) read once per event-loop turn, as nginx reads its own once per
 * pass of its event loop (`ngx_current_msec`). Deadlines, circuit-breaker windows, idle ages and
 * balancer picks work in milliseconds; a proxied request read the clock five times (~35 ns each).
 * The first `nowMs()` of a turn reads it, later ones in the same turn get that value, and the end
 * of the turn (`turn-end.ts`) forgets it. A value is at most one turn old: a timeout can fire
 * early by the length of the turn that armed it (well under a millisecond at full load).
 *
 * Durations that are measured and reported (request times, connect latency) keep
 * `performance.now()`.
 */
import { onTurnEnd, scheduleTurnEnd } from './turn-end.js';

let current = 0;

/** `Date.now()` as of the first call in this turn. */
export function nowMs(): number {
  if (current === 0) {
    current = Date.now();
    scheduleTurnEnd();
  }
  return current;
}

onTurnEnd(() => {
  current = 0;
});
