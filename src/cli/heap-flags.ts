/**
 * V8 heap flags for `zipline run`, applied by restarting the process once in place (execv,
 * same PID) before anything else is loaded.
 *
 * Why, each measured with alternating fresh-process runs (docs/dev/HTTP-DATA-PATH.md, "Heap flags"):
 *
 * - `--initial-old-space-size=32`: V8 counts ArrayBuffer memory allocated since the last full GC
 *   (every socket read Node makes itself is one) against the old generation's limit. A proxy's
 *   heap is small (~15 MiB live), so its limit is small, and under load that started a full
 *   mark-compact every 50–100 ms (a JavaScript tunnel idle for a minute moved 89 MB/s instead of
 *   160; 1 MiB HTTP bodies lost a fifth of their throughput). The flag is a floor under the limit.
 *   It was 64 until 2026-12-04; with 32, HTTPS 1 MiB bodies (TLS reads are still ArrayBuffers)
 *   moved 394–424 MB/s against 419–420 with 64.
 * - `--heap-growing-percent=10`: after a full GC the next limit is the live size + 10 % (at least
 *   V8's minimum step), not V8's dynamic 1.1–4× of it. Accepted sockets outlive a scavenge or two
 *   in Node and are promoted, so a new connection per request filled the old generation with
 *   dead sockets up to the limit: peak RSS 132–133 MiB over the HTTP bench's scenarios, ~45 MiB
 *   of it garbage from that one. With this flag and the floor at 32: 95–102 MiB; CPU per
 *   keep-alive request and per new connection within noise (20.8–20.9 → 21.2–23.8 µs and
 *   93–103 → 101–107 µs on a noisy host; three runs each, alternating).
 * - `--max-semi-space-size=8`: the young generation at most 2 × 8 MiB (Node 20 grows it to
 *   2 × 16): 111–112 → 98–100 MiB at 1,000 connections when it came (2026-12-02). With the flags
 *   above, 4 saved ~4 MiB more (91–96) and cost up to ~10 % CPU per request at 1,000
 *   connections in most runs; 1 and 2 cost +25 % per keep-alive request.
 * - `--no-allocation-site-pretenuring`: at 1,000 keep-alive connections a request's objects were
 *   still alive at half the young generation's scavenges (1,000 exchanges in flight), so V8
 *   decided their allocation sites make long-lived objects and allocated them in the old
 *   generation directly, where they died: a mark-compact every ~300 ms and 2.3 ms scavenges.
 *   Without it (2026-12-06, alternating fresh processes, wrk -c1000): 23.6–26.9 → 19.1–22.1 µs
 *   of proxy CPU per request, 37–43 k → 45–52 k req/s, p99 54–62 → 28–49 ms, peak RSS 1–2 MiB
 *   lower; keep-alive at 50 connections, a new connection per request, HTTPS 1 MiB bodies and
 *   the JavaScript tunnel's bulk throughput within noise.
 *
 * Skipped (zipline runs as started) when: not Linux or the addon is not built, the flag is
 * already given (yours wins; any other V8 flag of yours comes after ours and wins too),
 * the parent forked it with an IPC channel, or `ZIPLINE_NO_REEXEC=1`.
 */
import { procBinding } from '../core/proc-binding.js';

export const HEAP_FLAGS: readonly string[] = [
  '--initial-old-space-size=32',
  '--heap-growing-percent=10',
  '--max-semi-space-size=8',
  '--no-allocation-site-pretenuring',
];

/** The node command line `zipline run` restarts itself with (null: run as started). */
export function heapFlagArgv(
  argv: readonly string[],
  execArgv: readonly string[],
  env: NodeJS.ProcessEnv,
): string[] | null {
  if (argv[2] !== 'run' || env.ZIPLINE_NO_REEXEC === '1') return null;
  // an IPC channel from a parent's fork() would not survive execv
  if (env.NODE_CHANNEL_FD !== undefined) return null;
  if (execArgv.some((a) => a.startsWith('--initial-old-space-size'))) return null;
  return [process.execPath, ...HEAP_FLAGS, ...execArgv, ...argv.slice(1)];
}

/** Restarts the process with the heap flags when it should and can; otherwise returns. */
export function applyHeapFlags(): void {
  if (process.platform !== 'linux') return;
  const next = heapFlagArgv(process.argv, process.execArgv, process.env);
  if (next === null) return;
  // not built: run without the flags; exec returns only if execv failed: the same
  procBinding()?.exec(process.execPath, next);
}
