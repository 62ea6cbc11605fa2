/**
 * `protocol: socks5` and `protocol: http_proxy` listeners: forward proxies that dial allowed
 * destinations directly (the same entries the tunnel agent runs over the tunnel).
 */
import { isLoopback } from '../admin/auth.js';
import type { ProxyListenerConfig } from '../config/schema.js';
import { parseHostPort } from '../config/units.js';
import { ClientGate, compileClientAccess } from '../l4/client-access.js';
import type { L4Context } from '../l4/context.js';
import type { Listener } from '../l4/listener.js';
import type { Logger } from '../log/logger.js';
import { OverLimit } from '../log/over-limit.js';
import { metrics } from '../metrics/catalog.js';
import { ProxyGate } from '../proxy-protocol/gate.js';
import { clientAddressOf } from '../proxy-protocol/reader.js';
import { compileProxyProtocol, type ProxyProtocolSettings } from '../proxy-protocol/settings.js';
import { AllowList } from '../tunnel/allow-list.js';
import { DirectDialer } from './dialer.js';
import { type EntryHandler, EntryServer, reportEntry } from './entry-server.js';
import { serveHttpProxy } from './http-proxy.js';
import { serveSocks5 } from './socks5.js';

/**
 * A socks5/http_proxy listener anyone beyond this host can reach, with no `clients.allow`: an
 * open proxy to its `allow` list (neither protocol authenticates here). Said by `run` and `check`.
 */
export function openProxyWarning(
  listenHost: string,
  clients: { allow: string[] } | undefined,
): string | null {
  if (isLoopback(listenHost) || listenHost === 'localhost' || (clients?.allow.length ?? 0) > 0) return null;
  return 'reachable beyond this host without clients.allow: anyone who can connect can use it to reach its allow list';
}

function handlerFor(cfg: ProxyListenerConfig, dialer: DirectDialer): EntryHandler {
  const opts = { headerTimeoutMs: cfg.timeouts.client_header, idleTimeoutMs: cfg.timeouts.client_idle };
  // a client's share of name lookups is its address's (src/proxy/name-resolver.ts)
  return cfg.protocol === 'socks5'
    ? (s, done) => void serveSocks5(s, dialer.forClient(clientAddressOf(s).ip), opts, done)
    : (s, done) => void serveHttpProxy(s, dialer.forClient(clientAddressOf(s).ip), opts, done);
}

export class ProxyListener implements Listener {
  readonly protocol: ProxyListenerConfig['protocol'];
  source: ProxyListenerConfig;
  private readonly dialer: DirectDialer;
  private readonly entry: EntryServer;
  private readonly reusePort: boolean;
  private readonly clientGate: ClientGate;
  private readonly overLimit: OverLimit;
  /** `proxy_protocol`: the balancers whose connections begin with a PROXY header. */
  private proxyProtocol: ProxyProtocolSettings | null;
  private readonly log: Logger;

  constructor(
    cfg: ProxyListenerConfig,
    readonly name: string,
    ctx: L4Context,
  ) {
    this.protocol = cfg.protocol;
    this.source = cfg;
    this.reusePort = ctx.reusePort;
    this.clientGate = new ClientGate(name, ctx.log);
    this.overLimit = new OverLimit(name, ctx.log, () => this.source.limits.max_connections);
    this.log = ctx.log;
    this.dialer = new DirectDialer({
      allow: new AllowList(cfg.allow),
      connectTimeoutMs: cfg.timeouts.connect,
    });
    this.entry = new EntryServer(
      name,
      (s) => s.destroy(), // replaced just below
      cfg.limits.max_connections,
      {
        onResult: (peer, r, startedAt) => reportEntry(ctx.accessLog, name, cfg.protocol, peer, r, startedAt),
        onRejected: (reason) => {
          if (reason === 'draining') metrics.downstreamRejected.labels(name, 'ZL_DRAINING').inc();
          else this.overLimit.refused();
        },
      },
      ctx.draining,
    );
    this.proxyProtocol = compileProxyProtocol(cfg.proxy_protocol);
    this.entry.proxyGate = new ProxyGate(name, ctx.log, () => this.proxyProtocol);
    this.applyHandler(cfg);
  }

  private applyHandler(cfg: ProxyListenerConfig): void {
    const clients = compileClientAccess(cfg.clients);
    const perClient = cfg.limits.max_connections_per_client;
    this.entry.setHandler(
      handlerFor(cfg, this.dialer),
      cfg.limits.max_connections,
      clients === null && perClient === 0 ? null : (s) => this.clientGate.admit(s, clients, perClient),
    );
  }

  async start(): Promise<void> {
    await this.entry.listen(this.source.listen, this.log, true, this.reusePort);
    const host = parseHostPort(this.address())?.host ?? '';
    const warning = openProxyWarning(host, this.source.clients);
    if (warning !== null)
      this.log.warn({ listener: this.name, address: this.address() }, `${this.protocol} listener ${warning}`);
  }

  address(): string {
    return this.entry.address();
  }

  update(cfg: ProxyListenerConfig): void {
    this.source = cfg;
    this.proxyProtocol = compileProxyProtocol(cfg.proxy_protocol);
    this.dialer.update({ allow: new AllowList(cfg.allow), connectTimeoutMs: cfg.timeouts.connect });
    this.applyHandler(cfg);
  }

  stopAccepting(): Promise<void> {
    return this.entry.stop();
  }

  activeCount(): number {
    return this.entry.sockets.size;
  }

  destroyAll(): void {
    this.entry.destroyAll();
  }

  stats(): Record<string, unknown> {
    return {
      protocol: this.protocol,
      address: this.address(),
      active: this.entry.sockets.size,
      total: this.entry.total,
    };
  }

  refreshMetrics(): void {}
}
