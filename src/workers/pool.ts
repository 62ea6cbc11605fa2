/**
 * `workers: N|auto` (N > 1): the primary's side. The primary forks N worker processes
 * (`worker-main.ts`), gives each the validated config, and from then on:
 * - restarts a worker that exits unexpectedly, after a full-jitter backoff (250 ms doubling to
 *   10 s; a worker that ran 30 s starts the count again), logged as `ZL_WORKER_EXITED` and
 *   counted in `zipline_worker_restarts_total`; listeners keep serving from the other workers;
 * - sends every reload to every worker and reports what they applied;
 * - answers `/stats`, `/metrics`, `/readyz` and `/debug/profile` from the workers' answers (with
 *   the counters of workers that exited carried on: `retired-series.ts`);
 * - drains them all on SIGTERM/SIGINT, each bounded by `drain_timeout`.
 * Each worker binds its own SO_REUSEPORT socket per listener, so the kernel spreads connections
 * (and UDP flows, by 4-tuple) across them; port 0 is picked once by the primary, and a fixed
 * address is checked free of other processes before the workers first bind it (`ports.ts`).
 */
import { availableParallelism } from 'node:os';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { ValidConfig } from '../config/schema.js';
import { isZiplineError, ZiplineError } from '../errors.js';
import { nativePump } from '../l4/native-pump.js';
import type { Logger } from '../log/logger.js';
import { metrics } from '../metrics/catalog.js';
import { fullJitterBackoff } from '../upstream/backoff.js';
import { mergeStats } from './merge-stats.js';
import { PortReservations } from './ports.js';
import { migratesQueuedConnections } from './queue-migration.js';
import { RetiredSeries } from './retired-series.js';
import { WorkerProcess } from './worker-process.js';

const START_TIMEOUT_MS = 30_000;
/** A reload may start new upstreams (DNS lookups are bounded by 5 s) and bind listeners. */
const RELOAD_TIMEOUT_MS = 15_000;
const QUERY_TIMEOUT_MS = 5_000;
/** How much longer than `drain_timeout` a worker gets to exit before it is killed. */
const DRAIN_GRACE_MS = 5_000;
const RESTART_BASE_MS = 250;
const RESTART_MAX_MS = 10_000;
/** A worker that ran this long before exiting restarts without the accumulated backoff. */
const STABLE_MS = 30_000;

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

export interface WorkersReload {
  listeners: { added: string[]; removed: string[]; changed: string[]; rebound: string[] };
  upstreams: { added: string[]; removed: string[]; changed: string[] };
  errors: string[];
}

/** The number of worker processes a config asks for (1: no workers, the process serves itself). */
export function workerCount(config: ValidConfig): number {
  return config.workers === 'auto' ? availableParallelism() : config.workers;
}

export class WorkerPool {
  private readonly procs: WorkerProcess[];
  private readonly ports = new PortReservations();
  /** Counters of workers that exited, still added to `/metrics`. */
  private readonly retired = new RetiredSeries();
  /** The config workers run (port-0 listeners on their reserved ports). */
  private config: ValidConfig | null = null;
  private started = false;
  private draining = false;

  constructor(
    readonly count: number,
    private readonly log: Logger,
  ) {
    this.procs = Array.from({ length: count }, (_, i) => new WorkerProcess(i));
  }

  async start(config: ValidConfig): Promise<void> {
    if (!nativePump.available) {
      throw new ZiplineError(
        'ZL_WORKERS_UNAVAILABLE',
        `workers: ${this.count} needs the native module for SO_REUSEPORT sockets, which is not built here (Linux, \`npm install\`); use workers: 1`,
      );
    }
    const resolved = await this.ports.resolve(config);
    if (resolved.errors.length > 0) {
      this.ports.releaseAll();
      throw resolved.errors[0];
    }
    this.config = resolved.config;
    try {
      await Promise.all(this.procs.map((w) => this.launch(w)));
    } catch (err) {
      await this.stopAll(1000);
      throw err;
    }
    this.ports.settle();
    this.started = true;
    this.refreshGauge();
    this.log.info({ worker_pids: this.procs.map((w) => w.pid) }, 'workers started');
  }

  private async launch(w: WorkerProcess): Promise<void> {
    w.spawn((code, signal) => this.onExit(w, code, signal));
    const config = this.config as ValidConfig;
    await w.request({ t: 'start', config }, START_TIMEOUT_MS);
    // a reload that came while this worker was starting did not reach it
    const latest = this.config;
    if (latest !== null && latest !== config)
      await w.request({ t: 'reload', config: latest }, RELOAD_TIMEOUT_MS);
    w.state = 'running';
    w.startedAt = Date.now();
    this.refreshGauge();
  }

  private onExit(w: WorkerProcess, code: number | null, signal: NodeJS.Signals | null): void {
    const reason = signal ?? `exit_${code ?? 'unknown'}`;
    w.lastExit = reason;
    void this.retired.retire(w.index);
    this.refreshGauge();
    if (this.draining || !this.started) {
      w.state = 'exited';
      return;
    }
    if (w.startedAt > 0 && Date.now() - w.startedAt >= STABLE_MS) w.failures = 0;
    const delay = fullJitterBackoff(w.failures, RESTART_BASE_MS, RESTART_MAX_MS);
    w.failures++;
    w.state = 'restarting';
    w.startedAt = 0;
    metrics.workerRestarts.labels(reason).inc();
    this.log.error(
      { worker: w.index, reason, restart_in_ms: delay, code: 'ZL_WORKER_EXITED' },
      'worker exited unexpectedly; starting a new one',
    );
    w.restartTimer = setTimeout(() => {
      w.restartTimer = null;
      if (this.draining) return;
      this.launch(w).then(
        () => {
          w.restarts++;
          this.log.info({ worker: w.index, worker_pid: w.pid }, 'worker restarted');
        },
        (err: unknown) => {
          // it exits after a failed start (and is restarted again with more backoff)
          this.log.error({ worker: w.index, err, code: codeOf(err) }, 'worker failed to start');
          if (w.child !== null && w.state === 'starting') w.kill();
        },
      );
    }, delay);
  }

  private running(): WorkerProcess[] {
    return this.procs.filter((w) => w.state === 'running');
  }

  private refreshGauge(): void {
    metrics.workersRunning.set(this.running().length);
  }

  /** Every running worker applies `next`; the first answer is the report, errors are collected. */
  async reload(next: ValidConfig): Promise<WorkersReload> {
    const resolved = await this.ports.resolve(next);
    this.config = resolved.config;
    const out: WorkersReload = {
      listeners: { added: [], removed: [], changed: [], rebound: [] },
      upstreams: { added: [], removed: [], changed: [] },
      // a listener whose new address another process holds is not given to the workers
      errors: resolved.errors.map((e) => e.message),
    };
    const config = this.config;
    const answers = await Promise.allSettled(
      this.running().map((w) => w.request({ t: 'reload', config }, RELOAD_TIMEOUT_MS)),
    );
    this.ports.settle();
    let first = true;
    for (const a of answers) {
      if (a.status === 'rejected') {
        out.errors.push((a.reason as Error).message);
        continue;
      }
      const r = a.value as WorkersReload;
      if (first) {
        Object.assign(out.listeners, r.listeners);
        Object.assign(out.upstreams, r.upstreams);
        first = false;
      }
      for (const e of r.errors) if (!out.errors.includes(e)) out.errors.push(e);
    }
    return out;
  }

  /** Why the workers are not all ready (empty when they are). */
  async readiness(): Promise<string[]> {
    const reasons: string[] = [];
    await Promise.all(
      this.procs.map(async (w) => {
        if (w.state !== 'running') {
          reasons.push(`worker ${w.index}: ${w.state}`);
          return;
        }
        try {
          const r = (await w.request({ t: 'ready' }, QUERY_TIMEOUT_MS)) as { reasons: string[] };
          for (const reason of r.reasons) reasons.push(`worker ${w.index}: ${reason}`);
        } catch (err) {
          reasons.push(`worker ${w.index}: ${(err as Error).message}`);
        }
      }),
    );
    return reasons.sort();
  }

  /** The workers' listeners and upstreams merged (`merge-stats.ts`), and each worker's state. */
  async stats(): Promise<Record<string, unknown>> {
    const views = await Promise.all(
      this.procs.map((w) =>
        w.state === 'running'
          ? w.request({ t: 'stats' }, QUERY_TIMEOUT_MS).then(
              (v) => v as Record<string, unknown>,
              () => null,
            )
          : Promise.resolve(null),
      ),
    );
    const answered = views.filter((v): v is Record<string, unknown> => v !== null);
    const now = Date.now();
    return {
      listeners: mergeStats(answered.map((v) => v.listeners)) ?? {},
      upstreams: mergeStats(answered.map((v) => v.upstreams)) ?? {},
      retired_listeners: mergeStats(answered.map((v) => v.retired_listeners)) ?? [],
      workers: this.procs.map((w, i) => ({
        index: w.index,
        pid: w.pid,
        state: w.state === 'running' && views[i] === null ? 'unresponsive' : w.state,
        uptime_s: w.startedAt > 0 ? Math.round((now - w.startedAt) / 1000) : 0,
        restarts: w.restarts,
        last_exit: w.lastExit,
      })),
    };
  }

  /** Prometheus text: the primary's series and every answering worker's, aggregated. */
  async metricsText(primary: MetricsJson): Promise<string> {
    const running = this.running();
    const answers = await Promise.allSettled(
      running.map((w) => w.request({ t: 'metrics' }, QUERY_TIMEOUT_MS)),
    );
    const all = [primary, this.retired.series()];
    answers.forEach((a, i) => {
      if (a.status !== 'fulfilled') return;
      this.retired.seen((running[i] as WorkerProcess).index, a.value as MetricsJson);
      all.push(a.value as MetricsJson);
    });
    return AggregatorRegistry.aggregate(all).metrics();
  }

  /** A CPU profile of worker `index`, ended early when `signal` aborts (its client went away). */
  async profile(index: number, seconds: number, signal: AbortSignal): Promise<string> {
    const w = this.procs[index];
    if (w === undefined) throw new ZiplineError('ZL_ADMIN_BAD_REQUEST', `no worker ${index}`);
    const stop = (): void => w.stopProfile();
    signal.addEventListener('abort', stop);
    try {
      return (await w.request({ t: 'profile', seconds }, seconds * 1000 + QUERY_TIMEOUT_MS)) as string;
    } finally {
      signal.removeEventListener('abort', stop);
    }
  }

  /** An upgrade serves in new workers now: says what the old workers' closing sockets may cost. */
  handOver(): void {
    if (process.platform !== 'linux' || migratesQueuedConnections()) return;
    this.log.info(
      'upgrade: new connections still waiting in an old worker\'s accept queue when it closes its socket are reset by the kernel; `sysctl net.ipv4.tcp_migrate_req=1` moves them to the new workers (docs/OPERATIONS.md, "Upgrade")',
    );
  }

  /**
   * Drains every worker (each bounded by `timeoutMs`); resolves when all have exited. Every
   * worker's listening sockets are closed first: a drain's `Connection: close` sends clients to
   * reconnect, and with SO_REUSEPORT one could land in another old worker's queue, which the
   * kernel resets when that socket closes (after an upgrade, new workers' sockets take them).
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true; // no restarts from here
    await Promise.all(
      this.procs.map((w) => w.request({ t: 'close-sockets' }, QUERY_TIMEOUT_MS).catch(() => {})),
    );
    return this.stopAll(timeoutMs + DRAIN_GRACE_MS);
  }

  private async stopAll(killAfterMs: number): Promise<void> {
    this.draining = true;
    const exits = this.procs.map((w) => {
      if (w.restartTimer !== null) clearTimeout(w.restartTimer);
      w.restartTimer = null;
      const child = w.child;
      if (child === null) return Promise.resolve();
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      w.drain();
      const timer = setTimeout(() => w.kill(), killAfterMs);
      return exited.finally(() => clearTimeout(timer));
    });
    await Promise.all(exits);
    this.ports.releaseAll();
    this.refreshGauge();
  }
}

function codeOf(err: unknown): string {
  return isZiplineError(err) ? err.code : 'ZL_INTERNAL';
}
