/**
 * Out of descriptors at accept (EMFILE, ENFILE). libuv sheds the waiting connections with a
 * spare descriptor of its own ("the EMFILE trick": close the spare, accept and close each,
 * reopen it), and says itself that the trick is unreliable with other threads: when another
 * thread takes the freed number first (zipline's native acceptor, which accepts on the same
 * socket, or libuv's thread pool), the reopen fails and the spare is gone. libuv 1.46 (Node 20)
 * then tells nobody: it accepts once per wake-up, the accept fails, the socket is still readable,
 * and the event loop spins at 100 % CPU, serving nothing, until a descriptor is freed elsewhere
 * (seen with strace: epoll_pwait and a failing accept4, in turn, on the main thread; 4 of 30
 * runs of the local-exhaustion test). libuv opens its spare again whenever it makes a stream
 * handle while it has none.
 *
 * The guard keeps reserve descriptors of its own and uses them two ways:
 * - `restoreLibuvSpare`, when the native acceptor meets EMFILE or ENFILE (libuv cannot say): one
 *   reserve is closed and a pipe handle made (a connect to a path that cannot exist), so a lost
 *   spare takes that number; an existing one leaves it free for the reserve to take back.
 * - On an EMFILE or ENFILE accept callback (libuv versions that make one, which also retried in a
 *   loop) one reserve is closed so that libuv's next accept succeeds; that connection, and every
 *   one accepted until the queue is empty, is closed unanswered (`onShed` counts them).
 * The reserve is taken back as soon as descriptors allow. A thread that keeps every descriptor
 * it can get defeats this as it defeats libuv's spare (docs/L4.md).
 */
import { closeSync, openSync } from 'node:fs';
import { type Server, Socket } from 'node:net';
import { getSystemErrorName } from 'node:util';
import type { Logger } from '../log/logger.js';
import { metrics } from '../metrics/catalog.js';

const RESERVE = 4;
const reserve: number[] = [];
/** Until the end of this event-loop turn, accepted connections are closed (the queue is shed). */
let shedding = false;
let refillPending = false;

type OnConnection = (this: unknown, err: number, client?: { close(): void }) => void;

function refill(): void {
  while (reserve.length < RESERVE) {
    try {
      reserve.push(openSync('/dev/null', 'r'));
    } catch {
      // still out of descriptors: try again in a second
      if (!refillPending) {
        refillPending = true;
        setTimeout(() => {
          refillPending = false;
          refill();
        }, 1000).unref();
      }
      return;
    }
  }
}

/** Frees one reserve descriptor for libuv's next accept; false when none is left. */
function shed(): boolean {
  const fd = reserve.pop();
  if (fd === undefined) return false;
  closeSync(fd);
  if (!shedding) {
    shedding = true;
    setImmediate(() => {
      shedding = false;
      refill();
    });
  }
  return true;
}

/** A Unix socket path no process can listen on (its directory does not exist). */
const NO_SUCH_PATH = '/nonexistent-zipline/spare.sock';

const ignore = (): void => {};

/**
 * After the native acceptor met EMFILE or ENFILE: gives libuv back its spare descriptor if
 * another thread took it (see above), from the reserve. No-op on Windows.
 */
export function restoreLibuvSpare(): void {
  if (process.platform === 'win32') return;
  const fd = reserve.pop();
  if (fd === undefined) return;
  closeSync(fd);
  // making the pipe handle is what reopens libuv's spare; its connect then fails (no descriptor
  // left, or no such path; should it connect after all, it is closed), and once it is closed
  // (with the descriptor it may have taken for itself) the reserve is taken back
  const probe = new Socket().on('error', ignore).on('close', refill);
  probe.connect(NO_SUCH_PATH, () => probe.destroy());
}

/** Wraps the accept callback of `server`'s listening handle (after listen). No-op on Windows. */
export function guardAccepts(server: Server, onShed: () => void): void {
  if (process.platform === 'win32') return;
  const handle = (server as unknown as { _handle?: { onconnection?: OnConnection } | null })._handle;
  const inner = handle?.onconnection;
  if (handle === null || handle === undefined || typeof inner !== 'function') return;
  if (reserve.length < RESERVE) refill();
  handle.onconnection = function (this: unknown, err, client) {
    if (err === 0 && shedding) {
      client?.close();
      onShed();
      return;
    }
    if (err !== 0) {
      const code = getSystemErrorName(err);
      if ((code === 'EMFILE' || code === 'ENFILE') && shed()) return;
    }
    inner.call(this, err, client);
  };
}

/** For tests: the reserve descriptors held now. */
export function reserveSize(): number {
  return reserve.length;
}

/** At most one warning per listener this often; every pause is counted. */
const PAUSE_WARN_EVERY_MS = 60_000;

/**
 * What a listener does when its native acceptor could not accept for want of descriptors or
 * memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): count it (`zipline_accept_errors_total`) and warn,
 * at most once a minute, as nginx logs its accept4() failures. Until then, the connections libuv
 * shed with its spare descriptor went unseen. (The warning does not read the descriptor limit:
 * reading /proc/self/limits takes a descriptor, and done at each listener's start it made the
 * local-exhaustion test's event loop spin in 8 of 175 runs, 1 of 60 read once at load, 0 of 150
 * without it: the test lowers the limit below descriptors already open.)
 */
export function acceptPausedReporter(listener: string, log: Logger): (errno: number) => void {
  let warnedAt = -PAUSE_WARN_EVERY_MS;
  return (errno) => {
    const code = errnoName(errno);
    metrics.acceptErrors.labels(listener, code).inc();
    if (code === 'EMFILE' || code === 'ENFILE') restoreLibuvSpare();
    const now = performance.now();
    if (now - warnedAt < PAUSE_WARN_EVERY_MS) return;
    warnedAt = now;
    log.warn(
      { listener, code: 'ZL_LOCAL_EXHAUSTED', errno: code },
      code === 'EMFILE' || code === 'ENFILE'
        ? 'out of file descriptors accepting connections: new ones wait or are closed unanswered until descriptors free up (raise `ulimit -n` / LimitNOFILE)'
        : 'out of kernel memory accepting connections: new ones wait or are closed unanswered',
    );
  };
}

function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-Math.abs(errno));
  } catch {
    return `errno ${errno}`;
  }
}
