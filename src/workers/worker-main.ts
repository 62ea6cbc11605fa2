/**
 * A worker process (`workers` > 1), forked by the primary (`pool.ts`). It runs the upstreams and
 * listeners of the config the primary sends, on its own SO_REUSEPORT sockets, and answers the
 * primary's requests (`messages.ts`). It drains and exits 0 when the primary asks, when it gets
 * SIGTERM/SIGINT (a terminal's Ctrl-C reaches the whole process group), or when the primary is
 * gone (the IPC channel closed): a worker never outlives its primary. SIGHUP is the primary's
 * to act on; a worker ignores it.
 */
import { captureCpuProfile, stopCpuProfile } from '../admin/profile.js';
import { EXIT } from '../cli/exit.js';
import { Runtime } from '../core/runtime.js';
import { isZiplineError } from '../errors.js';
import { createLogger, type Logger } from '../log/logger.js';
import { metrics, registry } from '../metrics/catalog.js';
import { WORKER_ENV, type WorkerAnswer, type WorkerCommand, type WorkerRequest } from './messages.js';

const index = Number(process.env[WORKER_ENV] ?? '0');
let log: Logger = createLogger('info', { worker: index });
let runtime: Runtime | null = null;
/** Settles when `start` has (a drain waits for it: listeners bound later would never stop). */
let started: Promise<unknown> = Promise.resolve();
let exiting = false;

function send(answer: WorkerAnswer, then?: () => void): void {
  if (process.connected) process.send?.(answer, undefined, undefined, () => then?.());
  else then?.();
}

async function answer(m: WorkerRequest): Promise<unknown> {
  if (m.t === 'start') {
    log = createLogger(m.config.log.level, { worker: index });
    runtime = new Runtime(m.config, { role: 'worker', workerIndex: index, log });
    started = runtime.start();
    await started;
    return Object.fromEntries([...runtime.listeners].map(([name, l]) => [name, l.address()]));
  }
  const rt = runtime;
  if (rt === null) throw new Error('not started');
  switch (m.t) {
    case 'reload':
      return rt.reload(m.config);
    case 'stats':
      return rt.localStats();
    case 'ready':
      return rt.localReadiness();
    case 'metrics':
      rt.refreshGauges();
      return registry.getMetricsAsJSON();
    case 'profile':
      return captureCpuProfile(m.seconds);
    case 'close-sockets':
      await started.catch(() => {});
      await rt.closeListeningSockets();
      return null;
  }
}

async function onMessage(m: WorkerCommand): Promise<void> {
  if (m.t === 'drain') {
    drainAndExit('asked by the primary');
    return;
  }
  if (m.t === 'profile-stop') {
    stopCpuProfile();
    return;
  }
  try {
    const value = await answer(m);
    send({ id: m.id, ok: true, value });
  } catch (err) {
    const code = isZiplineError(err) ? err.code : 'ZL_INTERNAL';
    send({ id: m.id, ok: false, code, message: (err as Error).message }, () => {
      // a worker that could not start (an address it cannot bind) exits; the primary decides
      if (m.t === 'start') process.exit(EXIT.start);
    });
  }
}

function drainAndExit(why: string): void {
  if (exiting) return;
  exiting = true;
  log.info({ why }, 'worker draining before exit');
  const rt = runtime;
  if (rt === null) process.exit(EXIT.ok);
  void started
    .catch(() => {})
    .then(() => rt.drain())
    .then(() => process.exit(EXIT.ok));
}

process.on('message', (m: WorkerCommand) => void onMessage(m));
process.on('disconnect', () => drainAndExit('the primary is gone'));
process.on('SIGTERM', () => drainAndExit('SIGTERM'));
process.on('SIGINT', () => drainAndExit('SIGINT'));
process.on('SIGHUP', () => {});
process.on('uncaughtException', (err) => {
  // as in `zipline run`: a bug must not take every connection of this worker down with it
  log.error({ err, code: 'ZL_INTERNAL' }, 'uncaught exception');
  metrics.internalErrors.inc();
});
