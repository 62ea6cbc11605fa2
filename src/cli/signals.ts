/**
 * Which signals reload and which drain, per platform. On Windows there is no SIGHUP to send: Node
 * raises it when the console window is closed, and Windows ends the process ~10 s later whatever
 * it does, so there it drains (as do Ctrl-C's SIGINT and Ctrl-Break's SIGBREAK), within 8 s
 * whatever `drain_timeout` says; reloads come from `POST /reload`. Upgrades (SIGUSR2 elsewhere) are
 * not available there: a process cannot hand its sockets to a new one this way on Windows.
 */
export interface SignalPlan {
  readonly reload: readonly NodeJS.Signals[];
  /** Start a new process with this one's sockets, then drain (docs/OPERATIONS.md "Upgrade"). */
  readonly upgrade: readonly NodeJS.Signals[];
  readonly drain: readonly NodeJS.Signals[];
  /** Drains that must end sooner than `drain_timeout` (ms), by signal. */
  readonly drainWithin: Partial<Record<NodeJS.Signals, number>>;
}

export function signalPlan(platform: NodeJS.Platform): SignalPlan {
  if (platform === 'win32') {
    return {
      reload: [],
      upgrade: [],
      drain: ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'],
      drainWithin: { SIGHUP: 8_000 },
    };
  }
  return { reload: ['SIGHUP'], upgrade: ['SIGUSR2'], drain: ['SIGTERM', 'SIGINT'], drainWithin: {} };
}
