/**
 * V8 heap flags for `zipline run`, applied by restarting the process once in place (execv,
 * same PID) before anything else is loaded.
 *
 * Why: V8 counts ArrayBuffer memory allocated since the last full GC (every socket read Node
 * makes is one) against the old generation's limit. A proxy's heap is small (~14 MiB live), so
 * its limit is small, and under load that started a full mark-compact every 50–100 ms: measured
 * with `--trace-gc`, a tunnel that had been idle for a minute moved 89 MB/s instead of 160 (its
 * agent ran 96 mark-compacts in 6 s), and 1 MiB HTTP bodies lost a fifth of their throughput.
 * `--initial-old-space-size=64` lets V8 skip full GCs below 64 MiB of old generation (+4 MiB
 * peak RSS at 1,000 connections). V8 reads it only at start-up, and Node 20 neither accepts it
 * in NODE_OPTIONS nor has `process.execve`, hence the small `zipline_proc` addon.
 *
 * `--max-semi-space-size=8` caps the young generation at 2 × 8 MiB instead of Node 20's 2 × 16:
 * at 1,000 keep-alive HTTP connections the grown young generation was 32 MiB of the heap. A/B of
 * 2026-12-02, alternating runs (wrk 50 connections, then 1,000, one fresh process each): peak RSS
 * 111–112 → 98–100 MiB (127–129 → 114 with 8 × 1 MiB bodies in between), CPU per keep-alive
 * request within noise (13.7–14.8 µs both ways), tunnel bulk and RTT unchanged. Smaller (1, 2 or
 * 4 MiB) promoted more to the old generation and peaked higher (133–136 MiB).
 *
 * Skipped (zipline runs as started) when: not Linux or the addon is not built, the flag is
 * already given (yours wins; a `--max-semi-space-size` of yours comes after ours and wins too),
 * the parent forked it with an IPC channel, or `ZIPLINE_NO_REEXEC=1`.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export const HEAP_FLAGS: readonly string[] = ['--initial-old-space-size=64', '--max-semi-space-size=8'];

interface ProcBinding {
  exec(path: string, argv: string[]): number;
}

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
  let binding: ProcBinding;
  try {
    const require = createRequire(import.meta.url);
    binding = require(fileURLToPath(new URL('../../../build/Release/zipline_proc.node', import.meta.url)));
  } catch {
    return; // not built: run without the flags
  }
  binding.exec(process.execPath, next); // returns only if execv failed: run without the flags
}
