/**
 * Process logs (pino, JSON on stderr) and the access log (one JSON line per connection, session
 * or request; stdout, stderr, a file, or off). Disabled levels cost nothing (pino).
 */
import { type Logger, pino } from 'pino';
import { metrics } from '../metrics/catalog.js';

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
    processLogDestination(),
  );
}

/**
 * stderr, written synchronously. A failing stderr (a full disk behind a redirect) is counted, not
 * thrown into whatever code was logging; what it has not taken waits, up to 1 MiB.
 */
function processLogDestination(): ReturnType<typeof pino.destination> {
  const dest = pino.destination({ dest: 2, sync: true, maxLength: 1024 * 1024 });
  dest.on('error', () => metrics.logWriteErrors.labels('process').inc());
  dest.on('drop', () => metrics.logDropped.labels('process').inc());
  return dest;
}

export interface AccessLog {
  readonly enabled: boolean;
  write(entry: Record<string, unknown>): void;
  /** A file destination is opened again (after logrotate moved it); a no-op for others. */
  reopen(): void;
  /** Writes what waits, then closes; resolves when done or after 2 s (a failing destination). */
  close(): Promise<void>;
}

/**
 * Lines waiting for a slow or failing destination are kept up to this many bytes, then dropped
 * (counted): a full disk or a stalled pipe never grows memory without bound.
 */
const MAX_PENDING = 8 * 1024 * 1024;

/** A failing destination is reported at most this often. */
const REPORT_EVERY_MS = 10_000;

/**
 * How long closing waits for what is pending to be written. Not sonic-boom's `flushSync`: it
 * retries a failing write forever (a full disk hung the exit).
 */
const CLOSE_WAIT_MS = 2000;

/** Writes to a pipe of at most this many bytes are atomic (POSIX; Linux: 4096). */
const PIPE_BUF = 4096;

const OFF: AccessLog = { enabled: false, write() {}, reopen() {}, close: () => Promise.resolve() };

/**
 * With `workers` > 1 (`shared`), the primary and its workers share stdout/stderr (a pipe, often)
 * and the file: each writes at most PIPE_BUF (4 KiB) of whole lines per write(2), which the
 * kernel never interleaves with another writer's (a single line longer than that may interleave
 * on a pipe; files are opened O_APPEND: never), and a worker's lines start with `"worker":N`.
 */
export function createAccessLog(
  target: string,
  log: Logger,
  shared?: { readonly worker?: number },
): AccessLog {
  if (target === 'off') return OFF;
  const dest = target === 'stdout' ? 1 : target === 'stderr' ? 2 : target;
  const stream = pino.destination({
    dest,
    sync: false,
    mkdir: typeof dest === 'string',
    append: true,
    maxLength: MAX_PENDING,
    ...(shared !== undefined ? { maxWrite: PIPE_BUF } : {}),
  });
  let reportedAt = 0;
  // pino flushes a destination synchronously at process exit, and sonic-boom's flushSync retries
  // a failing write forever: while writes fail, that flush is skipped (the lines are lost anyway)
  let failing = false;
  const flushSync = stream.flushSync.bind(stream);
  stream.flushSync = () => {
    if (!failing) flushSync();
  };
  stream.on('write', () => {
    failing = false;
  });
  stream.on('error', (err: NodeJS.ErrnoException) => {
    failing = true;
    metrics.logWriteErrors.labels('access').inc();
    const now = Date.now();
    if (now - reportedAt < REPORT_EVERY_MS) return;
    reportedAt = now;
    log.error(
      { code: 'ZL_ACCESS_LOG_WRITE', target, err: err.code ?? err.message },
      'cannot write the access log; its lines wait (up to 8 MiB) and are retried',
    );
  });
  stream.on('drop', () => metrics.logDropped.labels('access').inc());
  const prefix = shared?.worker !== undefined ? `{"worker":${shared.worker},` : null;
  let closed = false;
  return {
    enabled: true,
    write(entry) {
      if (closed) return;
      const json = JSON.stringify(entry);
      stream.write(prefix === null || json.length <= 2 ? `${json}\n` : `${prefix}${json.slice(1)}\n`);
    },
    reopen() {
      if (closed || typeof dest !== 'string') return;
      try {
        stream.reopen();
      } catch (err) {
        stream.emit('error', err);
      }
    },
    close() {
      if (closed) return Promise.resolve();
      closed = true;
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          stream.destroy(); // what a failing destination did not take is dropped
          resolve();
        }, CLOSE_WAIT_MS);
        stream.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
        stream.end();
      });
    },
  };
}
