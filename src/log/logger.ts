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
  /** A line already made: one JSON object and its newline (src/log/access-line.ts). */
  writeLine(line: string): void;
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

/** sonic-boom's own bound on one write(2) when `maxWrite` is not given. */
const MAX_WRITE = 16 * 1024;

/** Batches not yet handed to their destination, written out by the process's exit. */
const unflushed = new Set<() => void>();
let exitHook = false;

const OFF: AccessLog = {
  enabled: false,
  write() {},
  writeLine() {},
  reopen() {},
  close: () => Promise.resolve(),
};

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
  const maxWrite = shared !== undefined ? PIPE_BUF : MAX_WRITE;
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
  // a dropped write is a chunk of whole lines (see flush)
  stream.on('drop', (data: string) => metrics.logDropped.labels('access').inc(countLines(data)));
  const prefix = shared?.worker !== undefined ? `{"worker":${shared.worker},` : null;
  let closed = false;
  // Lines are collected for the rest of the event-loop turn and handed to sonic-boom as chunks of
  // whole lines of at most `maxWrite` bytes. One write per line cost ~6 µs per HTTP request:
  // sonic-boom appends each string to its pending one and measures that (Buffer.byteLength,
  // which flattens the whole rope, up to 16 KiB) on every write.
  let batch: string[] = [];
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    if (batch.length === 0) return;
    const lines = batch;
    batch = [];
    let start = 0;
    let bytes = 0;
    for (let i = 0; i < lines.length; i++) {
      const n = Buffer.byteLength(lines[i] as string);
      if (bytes + n > maxWrite && i > start) {
        stream.write(lines.slice(start, i).join(''));
        start = i;
        bytes = 0;
      }
      bytes += n;
    }
    stream.write(start === 0 ? lines.join('') : lines.slice(start).join(''));
  };
  // at exit (a second signal's process.exit): this turn's lines, then what sonic-boom holds,
  // synchronously (pino's own exit hook may already have flushed it before these were added)
  const atExit = (): void => {
    try {
      flush();
      stream.flushSync();
    } catch {
      // not open yet, destroyed or failing: those lines are lost either way
    }
  };
  unflushed.add(atExit);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const f of unflushed) f();
    });
  }
  const add = (line: string): void => {
    batch.push(line);
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
  return {
    enabled: true,
    write(entry) {
      if (closed) return;
      const json = JSON.stringify(entry);
      add(prefix === null || json.length <= 2 ? `${json}\n` : `${prefix}${json.slice(1)}\n`);
    },
    writeLine(line) {
      if (closed) return;
      add(prefix === null ? line : `${prefix}${line.slice(1)}`);
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
      flush();
      unflushed.delete(atExit);
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

function countLines(s: string): number {
  let n = 0;
  for (let i = s.indexOf('\n'); i !== -1; i = s.indexOf('\n', i + 1)) n++;
  return n;
}
