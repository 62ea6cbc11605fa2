/**
 * A `protocol: udp` listener (nginx `stream { listen … udp; proxy_responses; }`): datagrams from
 * one client address form a session with its own connected upstream socket, chosen by the
 * balancer once per session. Replies go back from the listening socket. A session ends after
 * `responses` replies per datagram the client sent (when set), after `idle_timeout` without
 * traffic, or on an ICMP error.
 *
 * Order: a session's datagrams are sent in arrival order (queued in order while its socket
 * connects; `dgram` sends in call order afterwards).
 */

import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { hash32 } from '../balancer/hash-fn.js';
import type { UdpListenerConfig } from '../config/schema.js';
import { formatHostPort, parseHostPort } from '../config/units.js';
import { inherited, offer, withdraw } from '../core/handover.js';
import { type ErrorCode, ZiplineError } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import { bindFailure } from './bind-failure.js';
import { clientAllowed } from './client-access.js';
import type { L4Context } from './context.js';
import { sweepIdle, sweepPeriod } from './idle-sweep.js';
import { KernelDropCounter } from './kernel-drops.js';
import { bindReusePort, dgramBound } from './listen.js';
import type { Listener } from './listener.js';
import {
  compileUdp,
  recordUdpSessionEnd,
  type UdpListenerSettings,
  type UdpMetrics,
  udpMetrics,
} from './udp-common.js';
import { UdpSession } from './udp-session.js';

export class UdpListener implements Listener {
  readonly protocol = 'udp' as const;
  readonly name: string;
  source: UdpListenerConfig;
  settings: UdpListenerSettings;
  readonly socket: Socket;
  private readonly sessions = new Map<string, UdpSession>();
  private accepting = true;
  private sweepTimer: NodeJS.Timeout | null = null;
  readonly m: UdpMetrics;
  private readonly kernelDrops: KernelDropCounter;

  constructor(
    cfg: UdpListenerConfig,
    name: string,
    readonly ctx: L4Context,
  ) {
    this.name = name;
    this.source = cfg;
    this.settings = compileUdp(cfg);
    const hp = parseHostPort(cfg.listen);
    this.socket = createSocket({ type: hp !== undefined && isIPv6(hp.host) ? 'udp6' : 'udp4' });
    this.m = udpMetrics(name);
    this.kernelDrops = new KernelDropCounter(name);
    this.socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    this.socket.on('error', (err) => ctx.log.warn({ listener: name, err }, 'udp listener error'));
    this.scheduleSweep();
  }

  async start(): Promise<void> {
    const hp = parseHostPort(this.source.listen);
    if (hp === undefined) throw new Error(`bad listen address ${this.source.listen}`);
    const failed = (err: NodeJS.ErrnoException): ZiplineError =>
      new ZiplineError(
        'ZL_LISTEN_FAILED',
        `listener ${this.name}: cannot bind ${this.source.listen}: ${bindFailure(err, this.source.listen)}`,
        { cause: err },
      );
    const handed = this.ctx.reusePort ? undefined : inherited('udp', this.name, this.source.listen);
    let target: { address: string; port: number } | { fd: number } = handed
      ? { fd: handed.fd }
      : { address: hp.host, port: hp.port };
    if (this.ctx.reusePort) {
      try {
        target = { fd: (await bindReusePort(hp.host, hp.port, false))[0] };
      } catch (err) {
        throw failed(err as NodeJS.ErrnoException);
      }
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => reject(failed(err));
      this.socket.once('error', onError);
      this.socket.bind({ ...target, exclusive: true }, () => {
        this.socket.off('error', onError);
        // the kernel caps it at net.core.rmem_max
        if (this.settings.receiveBuffer > 0) this.socket.setRecvBufferSize(this.settings.receiveBuffer);
        resolve();
      });
    });
    if (!this.ctx.reusePort) {
      offer(this, 'udp', this.name, this.source.listen, () => dgramBound(this.socket));
      this.socket.once('close', () => withdraw(this));
    }
  }

  address(): string {
    try {
      const a = this.socket.address();
      return formatHostPort(a.address, a.port);
    } catch {
      return '';
    }
  }

  update(cfg: UdpListenerConfig): void {
    const idleChanged = cfg.udp.idle_timeout !== this.settings.idleTimeoutMs;
    this.source = cfg;
    this.settings = compileUdp(cfg);
    if (idleChanged) this.scheduleSweep();
  }

  /**
   * UDP has no accept: stopping means no *new* sessions; datagrams of existing sessions are still
   * relayed until they end, then the socket is closed.
   */
  stopAccepting(): Promise<void> {
    this.accepting = false;
    this.closeIfIdle();
    return Promise.resolve();
  }

  /**
   * An upgrade: the new process reads this socket now. Node's dgram cannot stop reading a socket
   * it keeps, so this one's sessions end here and it closes (the native listener's go on).
   */
  handOver(): void {
    this.accepting = false;
    for (const s of [...this.sessions.values()]) s.close('ZL_DRAINING', 'drain');
    this.closeIfIdle();
  }

  activeCount(): number {
    return this.sessions.size;
  }

  destroyAll(): void {
    for (const s of [...this.sessions.values()]) s.close('ZL_DRAIN_TIMEOUT', 'drain');
    this.closeIfIdle();
  }

  private closeIfIdle(): void {
    if (!this.accepting && this.sessions.size === 0) {
      if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
      this.sweepTimer = null;
      try {
        this.socket.close();
      } catch {
        // already closed
      }
    }
  }

  private onMessage(msg: Buffer, rinfo: RemoteInfo): void {
    const key = `${rinfo.address}:${rinfo.port}`;
    let session = this.sessions.get(key);
    if (session === undefined) {
      if (!this.accepting || this.ctx.draining()) {
        this.drop('ZL_DRAINING');
        return;
      }
      if (!clientAllowed(this.settings.clients, rinfo.address)) {
        this.drop('ZL_CLIENT_DENIED');
        return;
      }
      if (this.sessions.size >= this.settings.maxSessions) {
        this.drop('ZL_UDP_SESSION_LIMIT');
        return;
      }
      const upstream = this.ctx.upstream(this.settings.upstream);
      if (upstream === undefined) {
        this.drop('ZL_UPSTREAM_UNAVAILABLE');
        return;
      }
      const picked = upstream.pick(hash32(rinfo.address));
      if (typeof picked === 'string') {
        metrics.upstreamUnavailable.labels(upstream.name, picked).inc();
        this.drop(picked);
        return;
      }
      session = new UdpSession(this, key, rinfo.address, rinfo.port, upstream, picked);
      this.sessions.set(key, session);
      this.m.total.inc();
      this.m.active.inc();
    }
    session.fromClient(msg);
  }

  drop(code: ErrorCode): void {
    metrics.udpDropped.labels(this.name, code).inc();
  }

  /** Sends a reply from the listening socket to the session's client. */
  reply(session: UdpSession, msg: Buffer): void {
    this.socket.send(msg, session.clientPort, session.clientIp);
  }

  onSessionClosed(session: UdpSession): void {
    if (this.sessions.get(session.key) !== session) return;
    this.sessions.delete(session.key);
    this.report(session);
    recordUdpSessionEnd(this.ctx, this.name, this.settings, this.m, {
      clientIp: session.clientIp,
      clientPort: session.clientPort,
      upstreamAddr: session.endpoint.address,
      startedAt: session.startedAt,
      datagramsIn: session.datagramsIn,
      datagramsOut: session.datagramsOut,
      bytesIn: session.bytesIn,
      bytesOut: session.bytesOut,
      dropped: session.dropped,
      error: session.error,
      closeReason: session.closeReason,
      dataPath: 'js',
    });
    this.closeIfIdle();
  }

  /** Adds what a session moved since the last report to the counters (scrape, close). */
  private report(s: UdpSession): void {
    const r = s.reported;
    this.m.rx.inc(s.datagramsIn - r.dIn);
    this.m.tx.inc(s.datagramsOut - r.dOut);
    this.m.bytesRx.inc(s.bytesIn - r.bIn);
    this.m.bytesTx.inc(s.bytesOut - r.bOut);
    r.dIn = s.datagramsIn;
    r.dOut = s.datagramsOut;
    r.bIn = s.bytesIn;
    r.bOut = s.bytesOut;
  }

  /** Brings the datagram and byte counters up to date (before a metrics scrape). */
  refreshMetrics(): void {
    for (const s of this.sessions.values()) this.report(s);
    try {
      const a = this.socket.address();
      this.kernelDrops.refresh(a.address, a.port);
    } catch {
      // not bound (yet, or any more)
    }
  }

  /** `udp.idle_timeout` by a coarse sweep over the sessions' datagram counters (see idle-sweep.ts). */
  private scheduleSweep(): void {
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    const every = sweepPeriod(this.settings.idleTimeoutMs);
    if (every === 0) return; // idle_timeout: 0 — sessions end by responses or errors only
    this.sweepTimer = setInterval(() => this.sweep(every), every);
    this.sweepTimer.unref();
  }

  private sweep(elapsedMs: number): void {
    sweepIdle(this.sessions.values(), elapsedMs, this.settings.idleTimeoutMs, expireSession);
  }

  stats(): Record<string, unknown> {
    return {
      protocol: 'udp',
      address: this.address(),
      upstream: this.settings.upstream,
      sessions: this.sessions.size,
      data_path: 'js',
    };
  }
}

function expireSession(session: UdpSession): void {
  session.close(null, 'idle');
}
