/**
 * One UDP session: a client address, its own connected upstream socket and its counters.
 * States: `connecting` (datagrams queued, at most `max_queue`) → `open` → `closed`.
 * Per datagram only plain fields change; the listener's sweep reads them for idle expiry and
 * metrics (no timer refresh, no metric call per datagram).
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import type { ErrorCode } from '../errors.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { Upstream } from '../upstream/upstream.js';
import type { UdpCloseReason } from './udp-common.js';
import type { UdpListener } from './udp-listener.js';

export type UdpSessionState = 'connecting' | 'open' | 'closed';

export class UdpSession {
  state: UdpSessionState = 'connecting';
  readonly startedAt = Date.now();
  readonly socket: Socket;
  error: ErrorCode | null = null;
  closeReason: UdpCloseReason | null = null;
  datagramsIn = 0;
  datagramsOut = 0;
  bytesIn = 0;
  bytesOut = 0;
  dropped = 0;
  /** Counter values already added to the listener's metrics. */
  reported = { dIn: 0, dOut: 0, bIn: 0, bOut: 0 };
  /** Idle bookkeeping for the listener's sweep. */
  lastActivity = 0;
  idleMs = 0;
  private queue: Buffer[] = [];

  constructor(
    private readonly listener: UdpListener,
    readonly key: string,
    readonly clientIp: string,
    readonly clientPort: number,
    private readonly upstream: Upstream,
    readonly endpoint: Endpoint,
  ) {
    upstream.acquire(endpoint);
    this.socket = createSocket({ type: isIPv6(endpoint.ip) ? 'udp6' : 'udp4' });
    this.socket.on('message', (msg) => this.fromUpstream(msg));
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.onError(err));
    const connectedAt = performance.now();
    this.socket.connect(endpoint.port, endpoint.ip, () => {
      if (this.state !== 'connecting') return;
      this.state = 'open';
      endpoint.recordSuccess(performance.now() - connectedAt);
      const queued = this.queue;
      this.queue = [];
      for (const msg of queued) this.send(msg);
    });
  }

  /** Datagrams either way so far: changes iff there was traffic. */
  activity(): number {
    return this.datagramsIn + this.datagramsOut;
  }

  fromClient(msg: Buffer): void {
    if (this.state === 'closed') return;
    this.datagramsIn++;
    this.bytesIn += msg.length;
    if (this.state === 'connecting') {
      if (this.queue.length >= this.listener.settings.maxQueue) {
        this.dropped++;
        this.listener.drop('ZL_UDP_QUEUE_FULL');
        return;
      }
      this.queue.push(msg);
      return;
    }
    this.send(msg);
  }

  private send(msg: Buffer): void {
    this.socket.send(msg);
  }

  private fromUpstream(msg: Buffer): void {
    if (this.state === 'closed') return;
    this.datagramsOut++;
    this.bytesOut += msg.length;
    this.listener.reply(this, msg);
    // nginx `proxy_responses`: replies expected per datagram the client sent (and was not dropped)
    const limit = this.listener.settings.responses;
    if (limit > 0 && this.datagramsOut >= limit * (this.datagramsIn - this.dropped))
      this.close(null, 'responses');
  }

  private onError(err: NodeJS.ErrnoException): void {
    // ICMP port unreachable on a connected socket shows up as ECONNREFUSED
    const code: ErrorCode =
      err.code === 'ECONNREFUSED' ? 'ZL_UPSTREAM_CONNECT_REFUSED' : 'ZL_UDP_SEND_FAILED';
    if (code === 'ZL_UPSTREAM_CONNECT_REFUSED') this.endpoint.recordFailure(Date.now());
    this.close(code, 'error');
  }

  close(error: ErrorCode | null, reason: UdpCloseReason): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.error = error;
    this.closeReason = reason;
    this.queue = [];
    this.upstream.release(this.endpoint);
    try {
      this.socket.close();
    } catch {
      // already closed by an error
    }
    this.listener.onSessionClosed(this);
  }
}
