/**
 * The agent's local entries — TCP forwards, SOCKS5, the HTTP proxy (each an `EntryServer`) and
 * UDP forwards — whose connections the agent carries through its relays. A reload applies them as
 * listeners are applied (docs/TUNNEL.md, "Reload"): an entry whose address is unchanged keeps its
 * socket (a forward's `to` applies to its next connections or associations); a new one is bound;
 * a removed or re-addressed one stops accepting and its open connections run to their end (the
 * TCP ones still count for a drain). Forwards are named by their place in the list
 * (`forwards[N]`, their metrics' label).
 */
import type { Socket } from 'node:net';
import type { TunnelAgentConfig } from '../config/schema.js';
import { parseHostPort } from '../config/units.js';
import { sameConfig as same } from '../config/valid.js';
import { isZiplineError } from '../errors.js';
import type { L4Context } from '../l4/context.js';
import { metrics } from '../metrics/catalog.js';
import { type Dialer, httpStatusOfReply } from '../proxy/dialer.js';
import {
  type EntryHandler,
  type EntryOptions,
  type EntryResult,
  EntryServer,
  reportEntry,
} from '../proxy/entry-server.js';
import { serveHttpProxy } from '../proxy/http-proxy.js';
import { pipeStream } from '../proxy/pipe.js';
import { serveSocks5 } from '../proxy/socks5.js';
import { type Destination, formatDestination } from './address.js';
import { UdpForward } from './agent-udp.js';
import { OPEN_STATUS } from './constants.js';

const UDP_IDLE_MS = 60_000;

/** What the entries need of the agent: the dialer through the relays and the current settings. */
export interface EntryHost extends Dialer {
  readonly cfg: TunnelAgentConfig;
}

/** One TCP entry: `kind` is `socks5`, `http_proxy` or `forwards[N]`. */
interface TcpEntry {
  readonly kind: string;
  readonly listen: string;
  readonly server: EntryServer;
  /** A TCP forward's destination, read per connection (a reload may change it in place). */
  readonly target: { to: Destination | null };
}

/** What a reload did to the entries, by listener name (`tunnel.agent.KIND`). */
export interface EntriesReport {
  readonly added: string[];
  readonly removed: string[];
  readonly rebound: string[];
  readonly changed: string[];
  readonly errors: string[];
}

type Wanted = { readonly kind: string; readonly listen: string; readonly to: Destination | null };

export class AgentEntries {
  private readonly tcp = new Map<string, TcpEntry>();
  /** Entries a reload removed or re-addressed, until their last connection closed. */
  private readonly retired = new Set<EntryServer>();
  /** UDP forwards by kind (`forwards[N]`), in the config's order. */
  private udp = new Map<string, { readonly listen: string; readonly fw: UdpForward }>();
  /** UDP forwards a reload removed or re-addressed, until their last association ended. */
  private readonly retiredUdp = new Set<UdpForward>();

  constructor(
    private readonly host: EntryHost,
    private readonly ctx: L4Context,
  ) {}

  /** Binds every entry of the config (on failure, what was bound is stopped and it throws). */
  async start(): Promise<void> {
    const cfg = this.host.cfg;
    try {
      for (const w of wantedUdp(cfg)) await this.bindUdp(w);
      for (const w of wantedTcp(cfg)) await this.bind(w);
    } catch (err) {
      await this.stopAccepting();
      throw err;
    }
    for (const e of this.tcp.values()) this.listening(e.kind, e.server.address());
    for (const u of this.udp.values()) this.listening('udp forward', u.fw.address());
  }

  private listening(entry: string, address: string): void {
    this.ctx.log.info({ entry, address }, 'tunnel agent entry listening');
  }

  private async bindUdp(w: WantedUdp): Promise<UdpForward> {
    const name = `tunnel.agent.${w.kind}`;
    const fw = new UdpForward(parseHostPort(w.listen) as Destination, w.to, (d) => this.host.openUdp(d), {
      name,
      listenText: w.listen,
      receiveBuffer: w.receiveBuffer,
      idleMs: UDP_IDLE_MS,
      onEnd: (peer, r, startedAt) => reportEntry(this.ctx.accessLog, name, 'tunnel-udp', peer, r, startedAt),
    });
    try {
      await fw.start();
    } catch (err) {
      fw.close(); // (its socket, which could not bind)
      throw err;
    }
    this.udp.set(w.kind, { listen: w.listen, fw });
    return fw;
  }

  private async bind(w: Wanted): Promise<TcpEntry> {
    const name = `tunnel.agent.${w.kind}`;
    const target = { to: w.to };
    const server = new EntryServer(
      name,
      this.handler(w.kind, target),
      this.host.cfg.max_connections, // more are closed and counted (ZL_LISTENER_OVER_LIMIT)
      {
        onResult: (peer, r, startedAt) => reportEntry(this.ctx.accessLog, name, 'tunnel', peer, r, startedAt),
        onRejected: (reason) =>
          metrics.downstreamRejected
            .labels(name, reason === 'draining' ? 'ZL_DRAINING' : 'ZL_LISTENER_OVER_LIMIT')
            .inc(),
      },
      this.ctx.draining,
    );
    const entry: TcpEntry = { kind: w.kind, listen: w.listen, server, target };
    await server.listen(w.listen, this.ctx.log, this.host.cfg.native !== 'off');
    this.tcp.set(w.kind, entry);
    return entry;
  }

  private handler(kind: string, target: TcpEntry['target']): EntryHandler {
    // read per connection: a reload's idle_timeout applies to the entries' next connections
    const opts = (): EntryOptions => ({ headerTimeoutMs: 10_000, idleTimeoutMs: this.host.cfg.idle_timeout });
    if (kind === 'socks5') return (s, done) => void serveSocks5(s, this.host, opts(), done);
    if (kind === 'http_proxy') return (s, done) => void serveHttpProxy(s, this.host, opts(), done);
    return (s, done) => this.forwardTcp(s, target.to as Destination, done);
  }

  /**
   * A reload's entries (the settings in `host.cfg` already): unchanged addresses keep their
   * sockets, new ones are bound, removed or re-addressed ones retired; one that cannot be bound
   * is reported in `errors`.
   */
  async reload(): Promise<EntriesReport> {
    const cfg = this.host.cfg;
    const report: EntriesReport = { added: [], removed: [], rebound: [], changed: [], errors: [] };
    for (const e of this.tcp.values()) e.server.setMaxConnections(cfg.max_connections);
    const wanted = new Map(wantedTcp(cfg).map((w) => [w.kind, w]));
    const toBind: Wanted[] = [];
    // stop what goes away or moves first: its address may be what another entry is bound to next
    for (const [kind, e] of this.tcp) {
      const w = wanted.get(kind);
      if (w !== undefined && w.listen === e.listen) {
        if (!same(w.to, e.target.to)) {
          e.target.to = w.to;
          report.changed.push(`tunnel.agent.${kind}`);
        }
        continue;
      }
      this.tcp.delete(kind);
      this.ctx.log.info(
        { entry: kind, address: e.server.address() }, // (before it stops: then it has none)
        'tunnel agent entry stopped accepting (reload)',
      );
      await e.server.stop();
      if (e.server.sockets.size > 0) this.retired.add(e.server);
      if (w === undefined) report.removed.push(`tunnel.agent.${kind}`);
      else {
        report.rebound.push(`tunnel.agent.${kind}`);
        toBind.push(w);
      }
    }
    for (const w of wanted.values()) {
      if (!this.tcp.has(w.kind) && !toBind.includes(w)) {
        toBind.push(w);
        report.added.push(`tunnel.agent.${w.kind}`);
      }
    }
    for (const w of toBind) {
      try {
        const e = await this.bind(w);
        this.listening(w.kind, e.server.address());
      } catch (err) {
        report.errors.push(`tunnel.agent.${w.kind}: ${(err as Error).message}`);
      }
    }
    await this.reloadUdp(cfg, report);
    return report;
  }

  /**
   * UDP forwards as the TCP ones, by kind: one whose `listen` stays keeps its socket (a new `to`
   * applies to new associations, a new `receive_buffer` at once); one removed or re-addressed takes
   * no new associations and closes once its open ones ended (their address stays bound until
   * then: a forward added on it meanwhile fails, and the reload says so).
   */
  private async reloadUdp(cfg: TunnelAgentConfig, report: EntriesReport): Promise<void> {
    const wanted = wantedUdp(cfg);
    const kept = new Map<string, { readonly listen: string; readonly fw: UdpForward }>();
    const moved = new Set<string>();
    for (const [kind, u] of this.udp) {
      const w = wanted.find((x) => x.kind === kind);
      if (w !== undefined && w.listen === u.listen) {
        kept.set(kind, u);
        continue;
      }
      // (its address first: with no association open, it closes at once)
      this.ctx.log.info(
        { entry: kind, address: u.fw.address() },
        'tunnel agent entry stopped accepting (reload)',
      );
      u.fw.stopAccepting();
      if (!u.fw.done) this.retiredUdp.add(u.fw);
      if (w === undefined) report.removed.push(`tunnel.agent.${kind}`);
      else {
        report.rebound.push(`tunnel.agent.${kind}`);
        moved.add(kind);
      }
    }
    this.udp = new Map();
    for (const w of wanted) {
      const u = kept.get(w.kind);
      if (u !== undefined) {
        if (u.fw.update(w.to, w.receiveBuffer)) report.changed.push(`tunnel.agent.${w.kind}`);
        this.udp.set(w.kind, u);
        continue;
      }
      if (!moved.has(w.kind)) report.added.push(`tunnel.agent.${w.kind}`);
      try {
        this.listening('udp forward', (await this.bindUdp(w)).address());
      } catch (err) {
        report.errors.push(`tunnel.agent.${w.kind}: ${(err as Error).message}`);
      }
    }
  }

  private forwardTcp(socket: Socket, to: Destination, done: (r: EntryResult) => void): void {
    const base: EntryResult = {
      method: 'FORWARD',
      dest: formatDestination(to),
      status: 0,
      error: null,
    };
    socket.pause();
    socket.on('error', () => {});
    this.host.connectTcp(to).then(
      (stream) => {
        if (socket.destroyed) {
          stream.destroy();
          done({ ...base, status: 499, error: 'ZL_CLIENT_ABORTED' });
          return;
        }
        pipeStream(stream, socket, this.host.cfg.idle_timeout, (r) =>
          done({
            ...base,
            status: 200,
            reply: OPEN_STATUS.OK,
            bytesIn: r.fromSocket,
            bytesOut: r.toSocket,
            error: r.error,
          }),
        );
      },
      (err) => {
        socket.resetAndDestroy();
        const status = (err as { openStatus?: number }).openStatus ?? OPEN_STATUS.FAILURE;
        done({
          ...base,
          status: httpStatusOfReply(status),
          reply: status,
          error: isZiplineError(err) ? err.code : 'ZL_TUNNEL_DIAL_FAILED',
        });
      },
    );
  }

  /** Entry addresses by kind (`socks5`, `http_proxy`, `forwards[0]`, `udp[0]`). */
  addresses(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const e of this.tcp.values()) out[e.kind] = e.server.address();
    let i = 0;
    for (const u of this.udp.values()) out[`udp[${i++}]`] = u.fw.address();
    return out;
  }

  async stopAccepting(): Promise<void> {
    for (const e of this.tcp.values()) await e.server.stop();
    for (const u of this.udp.values()) u.fw.close();
    for (const fw of this.retiredUdp) fw.close();
    this.retiredUdp.clear();
  }

  /** Open connections, those of retired entries included. */
  activeCount(): number {
    let n = 0;
    for (const e of this.tcp.values()) n += e.server.sockets.size;
    for (const s of this.retired) {
      if (s.sockets.size === 0) this.retired.delete(s);
      n += s.sockets.size;
    }
    return n;
  }

  destroyAll(): void {
    for (const e of this.tcp.values()) e.server.destroyAll();
    for (const s of this.retired) s.destroyAll();
  }

  stats(): Record<string, unknown> {
    this.activeCount(); // forgets retired entries whose connections all ended
    for (const fw of this.retiredUdp) if (fw.done) this.retiredUdp.delete(fw);
    return {
      entries: Object.fromEntries(
        [...this.tcp.values()].map((e) => [
          e.kind,
          { address: e.server.address(), active: e.server.sockets.size, total: e.server.total },
        ]),
      ),
      retired_entries: [
        ...[...this.retired].map((s) => ({ name: s.name, active: s.sockets.size })),
        ...[...this.retiredUdp].map((fw) => ({ name: fw.name, active: fw.sessions })),
      ],
      udp_forwards: [...this.udp.values()].map(({ fw }) => ({
        address: fw.address(),
        sessions: fw.sessions,
        dropped: fw.dropped,
      })),
    };
  }

  refreshMetrics(): void {
    for (const u of this.udp.values()) u.fw.refreshMetrics();
  }
}

type WantedUdp = {
  readonly kind: string;
  readonly listen: string;
  readonly to: Destination;
  readonly receiveBuffer: number;
};

/** The UDP forwards a config asks for, in its order. */
function wantedUdp(cfg: TunnelAgentConfig): WantedUdp[] {
  return cfg.forwards.flatMap((f, i) =>
    f.protocol === 'udp'
      ? [
          {
            kind: `forwards[${i}]`,
            listen: f.listen,
            to: parseHostPort(f.to) as Destination,
            receiveBuffer: f.receive_buffer,
          },
        ]
      : [],
  );
}

/** The TCP entries a config asks for, in the order they are bound. */
function wantedTcp(cfg: TunnelAgentConfig): Wanted[] {
  const out: Wanted[] = [];
  cfg.forwards.forEach((f, i) => {
    if (f.protocol !== 'udp')
      out.push({ kind: `forwards[${i}]`, listen: f.listen, to: parseHostPort(f.to) as Destination });
  });
  if (cfg.socks5 !== undefined) out.push({ kind: 'socks5', listen: cfg.socks5, to: null });
  if (cfg.http_proxy !== undefined) out.push({ kind: 'http_proxy', listen: cfg.http_proxy, to: null });
  return out;
}
