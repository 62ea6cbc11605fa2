/**
 * The zipline_proc addon (native/proc, Linux): what `zipline run` needs of the process that Node
 * does not offer. Loaded on first use; null where it is not built (other platforms, or a build
 * that failed), and each caller says what it does without it.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export interface ProcBinding {
  /** execv(2), same PID: returns only on failure (the errno). */
  exec(path: string, argv: string[]): number;
  /** Marks a descriptor close-on-exec: 0 or the errno. */
  cloexec(fd: number): number;
  /** One sd_notify datagram to `socketPath` (`@name`: abstract): 0 or the errno. */
  notify(socketPath: string, text: string): number;
  /** [1 stream | 2 datagram, port] of an IPv4/IPv6 socket, or [0, errno]. */
  sockinfo(fd: number): [number, number];
}

let loaded: ProcBinding | null | undefined;

export function procBinding(): ProcBinding | null {
  if (loaded !== undefined) return loaded;
  loaded = null;
  if (process.platform !== 'linux') return loaded;
  try {
    const require = createRequire(import.meta.url);
    loaded = require(
      fileURLToPath(new URL('../../../build/Release/zipline_proc.node', import.meta.url)),
    ) as ProcBinding;
  } catch {
    // not built
  }
  return loaded;
}
