/**
 * A `protocol: udp` listener whose data plane runs on the native thread (native/pump/udp.c):
 * datagrams are relayed without entering JavaScript. JavaScript keeps the control plane: for
 * each new client it picks the server with the upstream's balancer and accepts or refuses the
 * session; when a session ends it releases the server, updates metrics and writes the access
 * line. Behaviour matches the JavaScript `UdpListener` (the UDP test suite runs against both).
 */

import { hash32 } from '../balancer/hash-fn.js';
import type { UdpListenerConfig } from '../config/schema.js';
import { formatHostPort, parseHostPort } from '../config/units.js';
import { inherited, offer, withdraw } from '../core/handover.js';
import { type ErrorCode, ZiplineError } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { Upstream } from '../upstream/upstream.js';
import { bindFailure } from './bind-failure.js';
import { clientAllowed } from './client-access.js';
import type { L4Context } from './context.js';
import { KernelDropCounter } from './kernel-drops.js';
import type { Listener } from './listener.js';
import {
  type NativeUdpOwner,
  nativePump,
  UDP_END,
  type UdpCounters,
  type UdpEndReason,
  type UdpSettingsNative,
} from './native-pump.js';
import {
  compileUdp,
  recordUdpSessionEnd,
  type UdpCloseReason,
  type UdpListenerSettings,
  type UdpMetrics,
  udpMetrics,
} from './udp-common.js';

interface NativeSession {
  readonly clientIp: string;
  readonly clientPort: number;
  readonly upstream: Upstream;
  readonly endpoint: Endpoint;
  readonly startedAt: number;
}

const CLOSE_REASON: Record<UdpEndReason, UdpCloseReason> = {
  [UDP_END.responses]: 'responses',
  [UDP_END.idle]: 'idle',
  [UDP_END.error]: 'error',
  [UDP_END.cancel]: 'drain',
  [UDP_END.setup]: 'error',
};

const ECONNREFUSED = 111;

function nativeSettings(s: UdpListenerSettings): UdpSettingsNative {
  return {
    responses: s.responses,
    idleTimeoutMs: s.idleTimeoutMs,
    maxQueue: s.maxQueue,
    maxSessions: s.maxSessions,
  };
}

export class NativeUdpListener implements Listener, NativeUdpOwner {
  readonly protocol = 'udp' as const;
  readonly name: string;
  source: UdpListenerConfig;
  settings: UdpListenerSettings;
  private lid = 0;
  private host = '';
  private port = 0;
  private accepting = true;
  private closed = false;
  private readonly sessions = new Map<number, NativeSession>();
  private readonly m: UdpMetrics;
  /** Native listener totals already added to the metrics. */
  private readonly kernelDrops: KernelDropCounter;
  private reported: UdpCounters = {
    datagramsIn: 0,
    datagramsOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    dropLimit: 0,
    dropDraining: 0,
    dropQueue: 0,
    dropSend: 0,
    sessions: 0,
  };

  constructor(
    cfg: UdpListenerConfig,
    name: string,
    private readonly ctx: L4Context,
  ) {
    this.name = name;
    this.source = cfg;
    this.settings = compileUdp(cfg);
    this.m = udpMetrics(name);
    this.kernelDrops = new KernelDropCounter(name);
  }

  start(): Promise<void> {
    const hp = parseHostPort(this.source.listen);
    if (hp === undefined) return Promise.reject(new Error(`bad listen address ${this.source.listen}`));
    try {
      const r = nativePump.udpListen(
        this,
        hp.host,
        hp.port,
        nativeSettings(this.settings),
        this.ctx.reusePort,
        this.settings.receiveBuffer,
        this.ctx.reusePort ? undefined : inherited('udp', this.name, this.source.listen),
      );
      this.lid = r.lid;
      this.host = hp.host;
      this.port = r.port;
      // the native thread closes it (udpClose); not offered once this listener is closed
      if (!this.ctx.reusePort) {
        offer(this, 'udp', this.name, this.source.listen, () =>
          this.closed ? null : { fd: r.fd, port: r.port },
        );
      }
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(
        new ZiplineError(
          'ZL_LISTEN_FAILED',
          `listener ${this.name}: cannot bind ${this.source.listen}: ${bindFailure(err, this.source.listen)}`,
          {
            cause: err,
          },
        ),
      );
    }
  }

  address(): string {
    return this.closed ? '' : formatHostPort(this.host, this.port);
  }

  update(cfg: UdpListenerConfig): void {
    this.source = cfg;
    this.settings = compileUdp(cfg);
    nativePump.udpUpdate(this.lid, nativeSettings(this.settings));
  }

  stopAccepting(): Promise<void> {
    this.accepting = false;
    nativePump.udpStopAccepting(this.lid);
    this.closeIfIdle();
    return Promise.resolve();
  }

  /** An upgrade: the new process reads the socket now; these sessions still answer through it. */
  handOver(): void {
    this.accepting = false;
    nativePump.udpStopAccepting(this.lid, true);
    this.closeIfIdle();
  }

  activeCount(): number {
    return this.sessions.size;
  }

  destroyAll(): void {
    for (const id of this.sessions.keys()) nativePump.udpEnd(id);
  }

  onNewClient(sessionId: number, ip: string, port: number): void {
    const admitted = this.admit(ip);
    if (typeof admitted === 'string') {
      this.refuse(sessionId, admitted);
      return;
    }
    const { upstream, endpoint } = admitted;
    upstream.acquire(endpoint);
    this.sessions.set(sessionId, {
      clientIp: ip,
      clientPort: port,
      upstream,
      endpoint,
      startedAt: Date.now(),
    });
    this.m.total.inc();
    this.m.active.inc();
    nativePump.udpAccept(sessionId, endpoint.ip, endpoint.port);
  }

  /** The server for a new client's session, or why there is none. */
  private admit(ip: string): { upstream: Upstream; endpoint: Endpoint } | ErrorCode {
    if (!this.accepting || this.ctx.draining()) return 'ZL_DRAINING';
    if (!clientAllowed(this.settings.clients, ip)) return 'ZL_CLIENT_DENIED';
    const upstream = this.ctx.upstream(this.settings.upstream);
    if (upstream === undefined) return 'ZL_UPSTREAM_UNAVAILABLE';
    const picked = upstream.pick(hash32(ip));
    if (typeof picked === 'string') {
      metrics.upstreamUnavailable.labels(upstream.name, picked).inc();
      return picked;
    }
    return { upstream, endpoint: picked };
  }

  private refuse(sessionId: number, code: ErrorCode): void {
    metrics.udpDropped.labels(this.name, code).inc();
    nativePump.udpRefuse(sessionId);
  }

  onSessionEnd(
    sessionId: number,
    reason: UdpEndReason,
    errno: number,
    counts: { datagramsIn: number; datagramsOut: number; bytesIn: number; bytesOut: number; dropped: number },
  ): void {
    const s = this.sessions.get(sessionId);
    if (s === undefined) return; // a refused session
    this.sessions.delete(sessionId);
    s.upstream.release(s.endpoint);
    let error: ErrorCode | null = null;
    if (reason === UDP_END.error || reason === UDP_END.setup) {
      error = errno === ECONNREFUSED ? 'ZL_UPSTREAM_CONNECT_REFUSED' : 'ZL_UDP_SEND_FAILED';
      if (errno === ECONNREFUSED) s.endpoint.recordFailure(Date.now());
    } else if (reason === UDP_END.cancel && !this.accepting) {
      error = 'ZL_DRAIN_TIMEOUT';
    }
    recordUdpSessionEnd(this.ctx, this.name, this.settings, this.m, {
      clientIp: s.clientIp,
      clientPort: s.clientPort,
      upstreamAddr: s.endpoint.address,
      startedAt: s.startedAt,
      ...counts,
      error,
      closeReason: CLOSE_REASON[reason],
      dataPath: 'native',
    });
    this.closeIfIdle();
  }

  refreshMetrics(): void {
    if (this.closed) return;
    const c = nativePump.udpCounters(this.lid);
    const r = this.reported;
    this.m.rx.inc(c.datagramsIn - r.datagramsIn);
    this.m.tx.inc(c.datagramsOut - r.datagramsOut);
    this.m.bytesRx.inc(c.bytesIn - r.bytesIn);
    this.m.bytesTx.inc(c.bytesOut - r.bytesOut);
    const drops: [ErrorCode, number][] = [
      ['ZL_UDP_SESSION_LIMIT', c.dropLimit - r.dropLimit],
      ['ZL_DRAINING', c.dropDraining - r.dropDraining],
      ['ZL_UDP_QUEUE_FULL', c.dropQueue - r.dropQueue],
      ['ZL_UDP_SEND_FAILED', c.dropSend - r.dropSend],
    ];
    for (const [code, n] of drops) if (n > 0) metrics.udpDropped.labels(this.name, code).inc(n);
    this.reported = c;
    this.kernelDrops.refresh(this.host, this.port);
  }

  private closeIfIdle(): void {
    if (this.accepting || this.closed || this.sessions.size > 0) return;
    this.refreshMetrics();
    nativePump.udpClose(this.lid);
    this.closed = true;
    withdraw(this);
  }

  stats(): Record<string, unknown> {
    return {
      protocol: 'udp',
      address: this.address(),
      upstream: this.settings.upstream,
      sessions: this.sessions.size,
      data_path: 'native',
    };
  }
}
