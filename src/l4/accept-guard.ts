/**
 * Out of descriptors at accept (EMFILE, ENFILE). libuv sheds the waiting connections with a
 * reserve descriptor of its own ("the EMFILE trick": close the reserve, accept and close each,
 * reopen it), and says itself that the trick is unreliable with other threads: when another
 * thread takes the freed number first (zipline's native acceptor or pump, libuv's thread pool),
 * the reopen fails and the reserve is gone. libuv 1.46 (Node 20) then calls back with EMFILE and
 * tries the accept again, in a loop: the event loop spins at 100 % CPU and serves nothing until
 * a descriptor is freed elsewhere (libuv 1.49 no longer loops; its reserve comes back at the next
 * socket it makes).
 *
 * The guard keeps reserve descriptors of its own. On an EMFILE or ENFILE callback it closes one,
 * so that libuv's next accept succeeds; that connection, and every one accepted until the queue
 * is empty, is closed unanswered (the same shedding), and the reserve is taken back as soon as
 * descriptors allow. `onShed` counts each connection closed so. It mends a spare lost to a passing
 * thread; one that keeps every descriptor it can get defeats it as it defeats libuv's (docs/L4.md).
 */
import { closeSync, openSync } from 'node:fs';
import type { Server } from 'node:net';
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
