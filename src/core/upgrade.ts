/**
 * An upgrade in place (SIGUSR2, `POST /upgrade`; docs/OPERATIONS.md "Upgrade"): this process
 * starts a new one from the same command line, the code on disk now, handing it every listening
 * socket (src/core/handover.ts). Once the new process serves, this one stops accepting and drains;
 * if it fails to start, this one goes on serving as before (nginx's SIGUSR2 binary upgrade).
 */
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import type { ErrorCode } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { currentOffers, HANDOVER_ENV, handoverEnv } from './handover.js';

/** How long the new process may take to serve (its config check, binds, upstream DNS). */
export const UPGRADE_READY_TIMEOUT_MS = 60_000;

export interface UpgradeOutcome {
  readonly result: 'upgraded' | 'refused' | 'failed';
  /** `ZL_UPGRADE_FAILED` unless upgraded. */
  readonly error?: ErrorCode;
  readonly message: string;
  /** The new process (upgraded). */
  readonly pid?: number;
  /** How many listening sockets it was handed. */
  readonly sockets?: number;
}

export function upgradeRefused(message: string): UpgradeOutcome {
  return { result: 'refused', error: 'ZL_UPGRADE_FAILED', message };
}

/**
 * Starts the successor and resolves once it serves (`upgraded`) or could not (`failed`: it exited,
 * or was killed after `timeoutMs`). Its output goes where this process's goes.
 */
export function startSuccessor(log: Logger, timeoutMs = UPGRADE_READY_TIMEOUT_MS): Promise<UpgradeOutcome> {
  const sockets = currentOffers();
  const argv = [...process.execArgv, ...process.argv.slice(1)];
  log.info(
    { sockets: sockets.map((s) => `${s.kind} ${s.name} ${s.listen}`), command: [process.execPath, ...argv] },
    'upgrade: starting the new process',
  );
  return new Promise((resolve) => {
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(process.execPath, argv, {
        stdio: ['ignore', 'inherit', 'inherit', 'pipe', ...sockets.map((s) => s.fd)],
        env: { ...process.env, [HANDOVER_ENV]: handoverEnv(sockets) },
      });
    } catch (err) {
      resolve(failed(`could not start the new process: ${(err as Error).message}`));
      return;
    }
    const ready = child.stdio[3] as Readable;
    let said = '';
    let settled = false;
    const settle = (outcome: UpgradeOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      ready.destroy();
      child.off('exit', onExit);
      resolve(outcome);
    };
    const deadline = setTimeout(() => {
      child.kill('SIGKILL');
      settle(failed(`the new process did not serve within ${timeoutMs / 1000} s; it was killed`));
    }, timeoutMs);
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      settle(
        failed(`the new process exited (${signal ?? `code ${code}`}) before it served; its log says why`),
      );
    child.once('exit', onExit);
    child.once('error', (err) => settle(failed(`could not start the new process: ${err.message}`)));
    ready.setEncoding('utf8');
    ready.on('data', (chunk: string) => {
      said += chunk;
      if (!said.includes('\n')) return;
      if (!said.startsWith('ready ')) {
        child.kill('SIGKILL'); // not a zipline that serves: it must not keep the sockets
        return settle(failed(`the new process said ${JSON.stringify(said)}`));
      }
      // it runs on by itself: this process's exit must not wait for it
      child.unref();
      settle({
        result: 'upgraded',
        message: `process ${child.pid} serves; this one (${process.pid}) drains`,
        ...(child.pid === undefined ? {} : { pid: child.pid }),
        sockets: sockets.length,
      });
    });
    ready.on('error', () => {});
  });
}

function failed(message: string): UpgradeOutcome {
  return { result: 'failed', error: 'ZL_UPGRADE_FAILED', message };
}
