/**
 * The running process: one config generation of upstreams and listeners, the admin server, logs.
 * `reload()` moves to a new generation in place; `drain()` ends the process gracefully.
 *
 * Reload rules (nginx/HAProxy users expect these):
 * - a listener keeps its socket when its name, protocol and listen address are unchanged; its
 *   other settings apply to new connections only; established connections are never touched;
 * - a removed or re-addressed listener stops accepting; its open connections run to their end;
 * - an upstream keeps its endpoints (counters, passive and active health) when its name stays;
 *   a changed policy gets a new balancer, changed servers join/leave individually.
 *
 * Roles (`workers`, src/workers/): `single` runs everything in this process; with `workers` > 1
 * the `primary` runs the admin server, the tunnel and the shm bridges and supervises the
 * `worker`s, each of which runs every upstream and listener (SO_REUSEPORT sockets) and nothing else.
 */

import { captureCpuProfile } from '../admin/profile.js';
import { AdminServer } from '../admin/server.js';
import type { ListenerConfig, ValidConfig } from '../config/schema.js';
import { listenerName, sameConfig as same } from '../config/valid.js';
import type { ErrorCode } from '../errors.js';
import { HttpListener } from '../http/listener.js';
import { existingPool } from '../http/pool.js';
import type { L4Context } from '../l4/context.js';
import type { Listener } from '../l4/listener.js';
import { nativePump } from '../l4/native-pump.js';
import { RetiredListeners } from '../l4/retired-listeners.js';
import { TcpListener } from '../l4/tcp-listener.js';
import { UdpListener } from '../l4/udp-listener.js';
import { NativeUdpListener } from '../l4/udp-native-listener.js';
import { type AccessLog, createAccessLog, createLogger, type Logger } from '../log/logger.js';
import { metrics, registry } from '../metrics/catalog.js';
import type { ShmBridges } from '../shm/bridges.js';
import type { TunnelAgent } from '../tunnel/agent.js';
import type { TunnelRelay } from '../tunnel/relay.js';
import { reloadTunnel } from '../tunnel/reload.js';
import { compileUpstream } from '../upstream/settings.js';
import { type LookupAll, Upstream } from '../upstream/upstream.js';
import { ZIPLINE_VERSION } from '../version.js';
import { WorkerPool, workerCount } from '../workers/pool.js';
import { reloadListeners } from './reload-listeners.js';
import { type ReloadReport, refused } from './reload-report.js';
import { reloadUpstreams } from './reload-upstreams.js';
import { Turns } from './turns.js';
import { type UpgradeOutcome, upgradeRefused } from './upgrade.js';
import { waitFor } from './wait-for.js';

export type RuntimeRole = 'single' | 'primary' | 'worker';

export interface RuntimeOptions {
  /** `single` unless this process is one of a `workers` > 1 set. */
  readonly role?: RuntimeRole;
  /** A worker's index (0…N-1): in its access lines as `worker`. */
  readonly workerIndex?: number;
  readonly log?: Logger;
  readonly lookup?: LookupAll;
  /** Re-reads and validates the config file for SIGHUP / POST /reload. */
  readonly reloadSource?: () => ReloadSource | Promise<ReloadSource>;
  /** Starts a new process that takes this one's sockets, for SIGUSR2 / POST /upgrade (cli/run.ts). */
  readonly upgrade?: () => Promise<UpgradeOutcome>;
  /** Told when a reload from the source begins and ends (systemd's RELOADING=1, READY=1: systemd.ts). */
  readonly reloadHooks?: { begin(): void; end(): void };
}

export type { ReloadReport };

/** A config read for a reload: valid, or why not. */
export type ReloadSource = { ok: true; config: ValidConfig } | { ok: false; errors: string[] };

export class Runtime {
  config: ValidConfig;
  readonly log: Logger;
  accessLog: AccessLog;
  readonly upstreams = new Map<string, Upstream>();
  readonly listeners = new Map<string, Listener>();
  /** Listeners removed by a reload that still have connections. */
  private readonly retired = new RetiredListeners();
  readonly admin: AdminServer;
  /**
   * The shm bridges, the tunnel and the proxy entries (socks5, http_proxy) are loaded when the
   * config has them (`import()`), not with this module: 39 of the 132 modules a plain HTTP proxy
   * loaded were theirs, ~5 MiB of RSS in every process (each worker too).
   */
  shm: ShmBridges | null = null;
  relay: TunnelRelay | null = null;
  agent: TunnelAgent | null = null;
  readonly startedAt = Date.now();
  generation = 1;
  /** Reloads apply one at a time, in the order asked. */
  private readonly reloads = new Turns();
  private draining = false;
  /** Connections that still reach a listener are refused (`ZL_DRAINING`): set once a drain stopped them all. */
  private refusing = false;
  /** True once every listener of the first config is bound. */
  private started = false;
  private drainPromise: Promise<void> | null = null;
  private readonly ctx: L4Context;
  readonly role: RuntimeRole;
  /** The worker processes (primary role only). */
  readonly workers: WorkerPool | null;

  constructor(
    config: ValidConfig,
    private readonly options: RuntimeOptions = {},
  ) {
    this.config = config;
    this.role = options.role ?? 'single';
    this.log = options.log ?? createLogger(config.log.level);
    this.accessLog = this.openAccessLog(config.log.access);
    const self = this;
    this.ctx = {
      log: this.log,
      get accessLog() {
        return self.accessLog;
      },
      upstream: (name) => this.upstreams.get(name),
      draining: () => this.refusing,
      reusePort: this.role === 'worker',
    };
    this.admin = new AdminServer(this);
    this.workers = this.role === 'primary' ? new WorkerPool(workerCount(config), this.log) : null;
  }

  /** With workers, every process writes whole lines per write to the shared output (logger.ts). */
  private openAccessLog(target: string): AccessLog {
    const shared = this.role === 'worker' ? { worker: this.options.workerIndex ?? 0 } : {};
    return createAccessLog(target, this.log, this.role === 'single' ? undefined : shared);
  }

  /** Runs the data plane (upstreams, listeners) in this process: not the primary of workers. */
  private get servesTraffic(): boolean {
    return this.role !== 'primary';
  }

  /** Runs the admin server, tunnel and shm bridges: not a worker. */
  private get runsServices(): boolean {
    return this.role !== 'worker';
  }

  async start(): Promise<void> {
    try {
      if (this.runsServices) await this.admin.start(this.config.admin);
      if (this.servesTraffic) {
        for (const [name, cfg] of Object.entries(this.config.upstreams)) this.addUpstream(name, cfg);
        await Promise.all([...this.upstreams.values()].map((u) => u.start()));
        for (const cfg of this.config.listeners) await this.addListener(cfg as ListenerConfig);
      }
      await this.workers?.start(this.config);
      if (this.runsServices) await this.startServices();
    } catch (err) {
      await this.shutdown();
      throw err;
    }
    for (const l of this.listeners.values()) {
      this.log.info({ listener: l.name, protocol: l.protocol, address: l.address() }, 'listening');
    }
    this.started = true;
  }

  /** Shared-memory bridges and the tunnel: one instance per zipline, never per worker. */
  private async startServices(): Promise<void> {
    if (this.config.shm.length > 0) {
      const { ShmBridges } = await import('../shm/bridges.js');
      this.shm = new ShmBridges(this.log);
      await this.shm.start(this.config.shm);
    }
    const tunnel = this.config.tunnel;
    if (tunnel?.relay !== undefined) {
      const { TunnelRelay } = await import('../tunnel/relay.js');
      this.relay = new TunnelRelay(tunnel.relay, this.ctx);
      await this.relay.start();
    }
    if (tunnel?.agent !== undefined) {
      const { TunnelAgent } = await import('../tunnel/agent.js');
      this.agent = new TunnelAgent(tunnel.agent, this.ctx);
      await this.agent.start();
    }
  }

  private addUpstream(name: string, cfg: ValidConfig['upstreams'][string]): Upstream {
    const opts = this.options.lookup ? { log: this.log, lookup: this.options.lookup } : { log: this.log };
    const up = new Upstream(compileUpstream(name, cfg), opts);
    this.upstreams.set(name, up);
    return up;
  }

  private async addListener(cfg: ListenerConfig): Promise<Listener> {
    const name = listenerName(cfg);
    let l: Listener;
    if (cfg.protocol === 'tcp') l = new TcpListener(cfg, name, this.ctx);
    else if (cfg.protocol === 'http' || cfg.protocol === 'https') l = new HttpListener(cfg, name, this.ctx);
    else if (cfg.protocol === 'socks5' || cfg.protocol === 'http_proxy') {
      const { ProxyListener } = await import('../proxy/proxy-listener.js');
      l = new ProxyListener(cfg, name, this.ctx);
    } else if (cfg.native === 'auto' && nativePump.available) l = new NativeUdpListener(cfg, name, this.ctx);
    else l = new UdpListener(cfg, name, this.ctx);
    await l.start();
    this.listeners.set(name, l);
    return l;
  }

  /** Reload from the configured source (SIGHUP, POST /reload). */
  reloadFromSource(): Promise<ReloadReport> {
    const hooks = this.options.reloadHooks;
    return this.reloads.run(async () => {
      hooks?.begin();
      return this.reloadFromSourceNow().finally(() => hooks?.end());
    });
  }

  private async reloadFromSourceNow(): Promise<ReloadReport> {
    // the file is read when this reload's turn comes: the last one asked applies the latest
    const src = await this.options.reloadSource?.();
    if (src === undefined) return refused(['this process was not started from a config file']);
    if (!src.ok) {
      metrics.reloads.labels('refused').inc();
      this.log.error(
        { errors: src.errors, code: 'ZL_RELOAD_REFUSED' satisfies ErrorCode },
        'reload refused: the new config is invalid; keeping the old one',
      );
      return refused(src.errors);
    }
    return this.applyReload(src.config);
  }

  /** Moves to `next` (after any reload still running: reloads apply one at a time, in order). */
  reload(next: ValidConfig): Promise<ReloadReport> {
    return this.reloads.run(() => this.applyReload(next));
  }

  private async applyReload(next: ValidConfig): Promise<ReloadReport> {
    if (this.draining) return refused(['the process is draining']);
    const report: ReloadReport = {
      result: 'applied',
      errors: [],
      listeners: { added: [], removed: [], changed: [], rebound: [] },
      upstreams: { added: [], removed: [], changed: [] },
    };
    const errors = report.errors as string[];
    if (this.servesTraffic) await this.reloadTraffic(next, report);
    if (this.workers !== null) {
      // every worker applies the same config; what they report is the data plane's report
      const r = await this.workers.reload(next);
      Object.assign(report.listeners, r.listeners);
      Object.assign(report.upstreams, r.upstreams);
      errors.push(...r.errors);
    }
    if (this.runsServices) {
      if (next.workers !== this.config.workers) {
        errors.push('workers: a new number of worker processes takes effect at restart');
      }
      if (!same(next.shm, this.config.shm)) {
        errors.push('shm: bridge changes take effect at restart (segments outlive config generations)');
      }
      await reloadTunnel(this.config.tunnel, next.tunnel, this.relay, this.agent, {
        errors,
        listeners: report.listeners,
      });
    }
    await this.applyProcessSettings(next);
    this.config = next;
    this.generation++;
    const result = errors.length > 0 ? 'partial' : 'applied';
    metrics.reloads.labels(result).inc();
    this.log.info({ generation: this.generation, ...report, result }, 'config reloaded');
    return { ...report, result };
  }

  /** Upstreams and listeners of a new config generation (see the reload rules above). */
  private async reloadTraffic(next: ValidConfig, report: ReloadReport): Promise<void> {
    // upstreams first: listeners look them up by name on every new connection
    const removedUpstreams = await reloadUpstreams(this.upstreams, next.upstreams, report, (n, c) =>
      this.addUpstream(n, c),
    );
    await reloadListeners(this.listeners, next, report, {
      retire: (l) => this.retire(l),
      add: (cfg) => this.addListener(cfg),
      log: this.log,
    });
    for (const up of removedUpstreams) {
      up.close();
      existingPool(up)?.close();
    }
  }

  private async applyProcessSettings(next: ValidConfig): Promise<void> {
    this.log.level = next.log.level;
    if (next.log.access !== this.config.log.access) {
      const old = this.accessLog;
      this.accessLog = this.openAccessLog(next.log.access);
      void old.close();
    } else {
      this.accessLog.reopen(); // after logrotate moved the file: SIGHUP (or POST /reload) opens it anew
    }
    if (this.runsServices && next.admin.listen !== this.config.admin.listen) {
      await this.admin.rebind(next.admin);
    } else if (this.runsServices) {
      this.admin.setMaxConnections(next.admin.max_connections);
      // the token was removed, the address kept
      if (next.admin.token !== this.config.admin.token) this.admin.warnIfExposed(next.admin.token);
    }
  }

  private async retire(l: Listener): Promise<void> {
    this.listeners.delete(l.name);
    await l.stopAccepting();
    this.retired.add(l); // kept while it has connections
  }

  /** Open connections and sessions across current and retired listeners. */
  activeCount(): number {
    let n = 0;
    for (const l of this.listeners.values()) n += l.activeCount();
    return (
      n + this.retired.activeCount() + (this.relay?.activeCount() ?? 0) + (this.agent?.activeCount() ?? 0)
    );
  }

  /** Ready when this process is, and (primary) every worker is running and ready. */
  async readiness(): Promise<Readiness> {
    const own = this.localReadiness();
    if (this.workers === null) return own;
    const reasons = [...own.reasons, ...(await this.workers.readiness())];
    return { ready: reasons.length === 0, reasons };
  }

  /** This process's own readiness (a worker answers the primary with it). */
  localReadiness(): Readiness {
    const reasons: string[] = [];
    if (!this.started) reasons.push('starting: listeners are not all bound yet');
    if (this.draining) reasons.push('draining');
    const now = Date.now();
    for (const [name, up] of this.upstreams)
      if (!up.isReady(now)) reasons.push(`upstream ${name}: ${up.whyNotReady()}`);
    if (this.agent !== null && !this.agent.links.some((l) => l.state === 'up'))
      reasons.push('tunnel agent: no relay session is up');
    return { ready: reasons.length === 0, reasons };
  }

  /** An upgrade (SIGUSR2, POST /upgrade): what the new process did, or why there is none. */
  upgrade(): Promise<UpgradeOutcome> {
    const why =
      this.options.upgrade === undefined
        ? 'this process was not started by `zipline run`'
        : this.draining
          ? 'the process is draining'
          : null;
    if (why === null && this.options.upgrade !== undefined) return this.options.upgrade();
    this.log.warn({ code: 'ZL_UPGRADE_FAILED' satisfies ErrorCode }, `upgrade refused: ${why}`);
    return Promise.resolve(upgradeRefused(why ?? ''));
  }

  /** Closes every listening socket, serving on (a worker, before its primary has them all drain). */
  async closeListeningSockets(): Promise<void> {
    await Promise.all([...this.listeners.values()].map((l) => l.closeSocket?.()));
  }

  /**
   * A new process serves every socket now (an upgrade), before `drain` (which follows and stops
   * the listeners): the admin address goes to it, UDP listeners stop reading, and the relay's
   * agents are told they may open their next session at once (the new process accepts them).
   */
  handOver(): Promise<void> {
    this.admin.stopAccepting();
    for (const l of this.listeners.values()) l.handOver?.();
    this.workers?.handOver();
    return this.relay?.stopAccepting(0) ?? Promise.resolve();
  }

  /**
   * Graceful drain: stop accepting everywhere, wait for open connections to finish, close what is
   * left at `drain_timeout` (or `withinMs` when sooner: Windows ends a process whose console
   * closed ~10 s later). Resolves when everything is closed. Idempotent.
   */
  drain(withinMs?: number): Promise<void> {
    this.drainPromise ??= this.doDrain(
      Math.min(withinMs ?? Number.POSITIVE_INFINITY, this.config.drain_timeout),
    );
    return this.drainPromise;
  }

  private async doDrain(timeoutMs: number): Promise<void> {
    this.draining = true;
    metrics.draining.set(1);
    const started = Date.now();
    // every listener at once, and what one accepts before it has stopped is served (counted
    // below), not refused: only then do connections that still arrive count as refused
    const stopping = [...this.listeners.values()];
    await Promise.all(stopping.map((l) => l.stopAccepting()));
    for (const l of stopping) this.retired.add(l);
    this.listeners.clear();
    await this.relay?.stopAccepting();
    await this.agent?.stopAccepting();
    this.refusing = true;
    // workers drain their own connections, each bounded by the same drain_timeout
    const workersDrained = this.workers?.drain(timeoutMs);
    // logged once nothing accepts any more, so "draining" means no new connections
    this.log.info({ active: this.activeCount(), drain_timeout_ms: timeoutMs }, 'draining');
    await waitFor(() => this.activeCount() === 0, timeoutMs);
    const left = this.activeCount();
    if (left > 0) {
      this.log.warn(
        { left, code: 'ZL_DRAIN_TIMEOUT' satisfies ErrorCode },
        'drain timeout: closing what is left',
      );
      this.retired.destroyAll();
      this.agent?.destroyAll();
      this.relay?.destroyAll();
      // native data paths confirm asynchronously: let their last access lines be written first
      await waitFor(() => this.activeCount() === 0, 1000);
    }
    await workersDrained;
    await this.shutdown();
    this.log.info({ ms: Date.now() - started }, 'drained');
  }

  private async shutdown(): Promise<void> {
    await this.shm?.close();
    if (this.agent !== null) {
      await this.agent.stopAccepting();
      this.agent.close();
    }
    if (this.relay !== null) {
      await this.relay.stopAccepting();
      this.relay.destroyAll();
    }
    for (const l of this.listeners.values()) await l.stopAccepting();
    for (const up of this.upstreams.values()) {
      up.close();
      existingPool(up)?.close();
    }
    await this.admin.close();
    await this.accessLog.close();
  }

  /** `GET /stats`: this process's, with (primary) the workers' listeners and upstreams merged in. */
  async stats(): Promise<Record<string, unknown>> {
    const own = this.localStats();
    if (this.workers === null) return own;
    return { ...own, ...(await this.workers.stats()) };
  }

  /** `GET /metrics`: Prometheus text; (primary) every worker's series aggregated with its own. */
  async metricsText(): Promise<string> {
    this.refreshGauges();
    if (this.workers === null) return registry.metrics();
    return this.workers.metricsText(await registry.getMetricsAsJSON());
  }

  /** `GET /debug/profile`: this process, or (primary) worker `worker` (default 0). */
  profile(seconds: number, worker: number | null, signal: AbortSignal): Promise<string> {
    if (this.workers === null || worker === -1) return captureCpuProfile(seconds, signal);
    return this.workers.profile(worker ?? 0, seconds, signal);
  }

  localStats(): Record<string, unknown> {
    const now = Date.now();
    const listeners: Record<string, unknown> = {};
    for (const [name, l] of this.listeners) listeners[name] = l.stats();
    const upstreams: Record<string, unknown> = {};
    for (const [name, u] of this.upstreams) {
      const pool = existingPool(u);
      upstreams[name] = pool === undefined ? u.stats(now) : { ...u.stats(now), http_pool: pool.stats() };
    }
    return {
      version: ZIPLINE_VERSION,
      pid: process.pid,
      uptime_s: Math.round((now - this.startedAt) / 1000),
      generation: this.generation,
      draining: this.draining,
      listeners,
      upstreams,
      retired_listeners: this.retired.stats(),
      tunnel:
        this.relay === null && this.agent === null
          ? null
          : { relay: this.relay?.stats() ?? null, agent: this.agent?.stats() ?? null },
      shm: this.shm?.stats() ?? [],
    };
  }

  refreshGauges(): void {
    const now = Date.now();
    for (const u of this.upstreams.values()) {
      u.refreshGauges(now);
      existingPool(u)?.refreshMetrics();
    }
    for (const l of this.listeners.values()) l.refreshMetrics();
    this.retired.refreshMetrics();
    this.relay?.refreshMetrics();
    this.agent?.refreshMetrics();
  }
}

export interface Readiness {
  ready: boolean;
  reasons: string[];
}
