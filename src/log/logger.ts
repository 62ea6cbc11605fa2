/**
 * Process logs (pino, JSON on stderr) and the access log (one JSON line per connection, session
 * or request; stdout, stderr, a file, or off). Disabled levels cost nothing (pino).
 */
import { type Logger, pino } from 'pino';

export type { Logger };

/** `bindings` are added to every line (a worker process adds `worker: index`). */
export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid, ...bindings },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest: 2, sync: true }),
  );
}

export interface AccessLog {
  readonly enabled: boolean;
  write(entry: Record<string, unknown>): void;
  close(): void;
}

/** Writes to a pipe of at most this many bytes are atomic (POSIX; Linux: 4096). */
const PIPE_BUF = 4096;

const OFF: AccessLog = { enabled: false, write() {}, close() {} };

/**
 * With `workers` > 1 (`shared`), the primary and its workers share stdout/stderr (a pipe, often)
 * and the file: each writes at most PIPE_BUF (4 KiB) of whole lines per write(2), which the
 * kernel never interleaves with another writer's (a single line longer than that may interleave
 * on a pipe; files are opened O_APPEND: never), and a worker's lines start with `"worker":N`.
 */
export function createAccessLog(target: string, shared?: { readonly worker?: number }): AccessLog {
  if (target === 'off') return OFF;
  const dest = target === 'stdout' ? 1 : target === 'stderr' ? 2 : target;
  const stream = pino.destination({
    dest,
    sync: false,
    mkdir: typeof dest === 'string',
    append: true,
    ...(shared !== undefined ? { maxWrite: PIPE_BUF } : {}),
  });
  const prefix = shared?.worker !== undefined ? `{"worker":${shared.worker},` : null;
  let closed = false;
  return {
    enabled: true,
    write(entry) {
      if (closed) return;
      const json = JSON.stringify(entry);
      stream.write(prefix === null || json.length <= 2 ? `${json}\n` : `${prefix}${json.slice(1)}\n`);
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        stream.flushSync();
      } catch {
        // the stream may not be open yet; nothing to flush then
      }
      stream.end();
    },
  };
}
