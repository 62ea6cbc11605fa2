/**
 * The timer of a keep-alive pool's idle sweep (HTTP/1.1 connections, HTTP/2 sessions): every
 * quarter of the idle timeout, between 10 ms and 1 s, so a connection outlives its timeout by at
 * most a quarter of it; it does not keep the process alive.
 */
export function idleSweepTimer(idleTimeoutMs: number, sweep: () => void): NodeJS.Timeout {
  const every = Math.max(10, Math.min(1000, Math.floor(idleTimeoutMs / 4)));
  const timer = setInterval(sweep, every);
  timer.unref();
  return timer;
}
