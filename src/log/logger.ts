/**
 * Process logs (pino, JSON on stderr) and the access log (one JSON line per connection, session
 * or request; stdout, stderr, a file, or off). Disabled levels cost nothing (pino).
 */
import { type Logger, pino } from 'pino';

export type { Logger };

export function createLogger(level: string): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
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

const OFF: AccessLog = { enabled: false, write() {}, close() {} };

export function createAccessLog(target: string): AccessLog {
  if (target === 'off') return OFF;
  const dest = target === 'stdout' ? 1 : target === 'stderr' ? 2 : target;
  const stream = pino.destination({ dest, sync: false, mkdir: typeof dest === 'string', append: true });
  let closed = false;
  return {
    enabled: true,
    write(entry) {
      if (!closed) stream.write(`${JSON.stringify(entry)}\n`);
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
