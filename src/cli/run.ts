/** `zipline run`: start the runtime, wire signals, drain on exit. */
import { formatIssue } from '../config/issue.js';
import { loadConfigIsolated } from '../config/load-isolated.js';
import { isSuccessor, signalReady } from '../core/handover.js';
import { Runtime } from '../core/runtime.js';
import { activatedCount, unclaimedActivated } from '../core/socket-activation.js';
import { ServiceNotifier } from '../core/systemd.js';
import { startSuccessor, type UpgradeOutcome, upgradeRefused } from '../core/upgrade.js';
import { isZiplineError } from '../errors.js';
import { createLogger } from '../log/logger.js';
import { metrics } from '../metrics/catalog.js';
import { workerCount } from '../workers/pool.js';
import { EXIT, reportInvalidConfig } from './exit.js';
import { signalPlan } from './signals.js';

/** A different signal this soon after the first is a supervisor's copy of it (see `stop`). */
const FORWARDED_SIGNAL_MS = 500;

export async function runCommand(file: string): Promise<number> {
  // validated in a child process, here and at reloads: zod and yaml never load into this one
  const first = await loadConfigIsolated(file);
  if (!first.ok) return reportInvalidConfig(file, first.issues);
  const log = createLogger(first.config.log.level);
  // under systemd (Type=notify): told when zipline serves, reloads, drains, is upgraded
  const systemd = ServiceNotifier.fromEnv(process.env, log);
  if (activatedCount() > 0 && workerCount(first.config) > 1) {
    log.error(
      { code: 'ZL_LISTEN_FAILED' },
      `could not start: systemd passed ${activatedCount()} sockets (socket activation), but with workers each worker binds its own SO_REUSEPORT socket; use workers: 1 with a .socket unit`,
    );
    return EXIT.start;
  }
  let upgrading: Promise<UpgradeOutcome> | null = null;
  const upgrade = (): Promise<UpgradeOutcome> => {
    const why = upgradeBlocker(runtime, upgrading !== null);
    if (why !== null) {
      log.warn({ code: 'ZL_UPGRADE_FAILED' }, `upgrade refused: ${why}`);
      return Promise.resolve(upgradeRefused(why));
    }
    upgrading = startSuccessor(log).then((outcome) => {
      if (outcome.result !== 'upgraded') {
        log.error(
          { code: outcome.error },
          `upgrade failed: ${outcome.message}; this process goes on serving`,
        );
        upgrading = null;
        return outcome;
      }
      log.info({ new_pid: outcome.pid, sockets: outcome.sockets }, `upgrade: ${outcome.message}`);
      if (outcome.pid !== undefined) systemd?.mainPid(outcome.pid);
      void runtime
        .handOver()
        .then(() => runtime.drain())
        .then(() => process.exit(EXIT.ok));
      return outcome;
    });
    return upgrading;
  };
  const ready = (): void =>
    systemd?.ready(
      `serving ${runtime.config.listeners.length} listeners, config generation ${runtime.generation}`,
    );
  const runtime = new Runtime(first.config, {
    upgrade,
    // workers > 1: this process is the primary (admin, tunnel, shm) and forks the workers
    role: workerCount(first.config) > 1 ? 'primary' : 'single',
    log,
    ...(systemd === null ? {} : { reloadHooks: { begin: () => systemd.reloading(), end: () => ready() } }),
    reloadSource: async () => {
      try {
        const r = await loadConfigIsolated(file);
        return r.ok ? { ok: true, config: r.config } : { ok: false, errors: r.issues.map(formatIssue) };
      } catch (err) {
        return { ok: false, errors: [(err as Error).message] };
      }
    },
  });
  process.on('uncaughtException', (err) => {
    // A bug must not take every connection down with it: log loudly, count, keep serving.
    log.error({ err, code: 'ZL_INTERNAL' }, 'uncaught exception');
    metrics.internalErrors.inc();
  });
  try {
    await runtime.start();
  } catch (err) {
    // a coded error says what to do in its message (no stack: it is not a bug); any other may
    // be one, and keeps its stack
    if (isZiplineError(err)) log.error({ code: err.code }, `could not start: ${err.message}`);
    else log.error({ err, code: 'ZL_INTERNAL' }, 'could not start');
    return EXIT.start;
  }
  log.info({ config: file, admin: runtime.admin.url() }, 'zipline started');
  // a new process of an upgrade: the old one names it the main PID once it serves
  if (!isSuccessor()) ready();
  systemd?.startWatchdog(process.env, isSuccessor());
  // started by an upgrade: the old process drains once told (sockets nothing took are closed)
  const unclaimed = signalReady();
  if (unclaimed.length > 0)
    log.info({ sockets: unclaimed }, 'upgrade: closed sockets the config no longer uses');
  for (const line of unclaimedActivated()) log.warn(`systemd socket not used: ${line}`);
  const signals = signalPlan(process.platform);
  for (const sig of signals.upgrade) {
    process.on(sig, () => {
      log.info(`${sig}: upgrading`);
      void runtime.upgrade(); // (refused while draining, as POST /upgrade is)
    });
  }
  for (const sig of signals.reload) {
    process.on(sig, () => {
      log.info(`${sig}: reloading`);
      void runtime.reloadFromSource();
    });
  }
  let firstSignal: { readonly sig: string; readonly at: number } | null = null;
  const stop = (sig: NodeJS.Signals): void => {
    const now = performance.now();
    const first = firstSignal;
    if (first !== null) {
      // `npm run`/`npm start` pass the terminal's SIGINT on as a SIGTERM, which arrives right
      // after the terminal's own: the same request to drain, not a second one
      if (sig !== first.sig && now - first.at < FORWARDED_SIGNAL_MS) {
        log.debug({ signal: sig }, 'a forwarded copy of the first signal: still draining');
        return;
      }
      log.warn({ signal: sig }, 'second signal: exiting now');
      process.exit(1); // documented in OPERATIONS.md: a second signal forces exit 1
    }
    firstSignal = { sig, at: now };
    log.info({ signal: sig }, 'draining before exit');
    systemd?.stopping();
    void runtime.drain(signals.drainWithin[sig]).then(() => process.exit(EXIT.ok));
  };
  for (const sig of signals.drain) process.on(sig, () => stop(sig));
  return EXIT.ok;
}

/** Why an upgrade cannot run now (null: it can). */
function upgradeBlocker(runtime: Runtime, running: boolean): string | null {
  if (process.platform === 'win32')
    return 'Windows cannot hand listening sockets to a new process; restart instead';
  if (running) return 'an upgrade is already running';
  if (runtime.config.shm.length > 0) {
    return 'shm bridges serve their segments from one process at a time (docs/SHM.md); restart instead';
  }
  return null;
}
