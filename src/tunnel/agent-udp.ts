/**
 * UDP through the tunnel, agent side. `TunnelUdpChannel` is one association (an OPEN of kind UDP;
 * each datagram travels as DATAGRAM with its destination, replies come back with their source).
 * `UdpForward` is a local UDP port: one association per client address, ended when the relay
 * ends it (its `udp_idle_timeout`) or after the same idle time here.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { isIP } from 'node:net';
import { inherited, offer, withdraw } from '../core/handover.js';
import { type ErrorCode, isZiplineError } from '../errors.js';
import { KernelDropCounter } from '../l4/kernel-drops.js';
import { dgramBound } from '../l4/listen.js';
import { metrics } from '../metrics/catalog.js';
import type { UdpChannel } from '../proxy/dialer.js';
import type { EntryResult } from '../proxy/entry-server.js';
import { addressLength, type Destination, formatDestination, readAddress, writeAddress } from './address.js';
import type { SessionApi, SessionStream } from './session-api.js';

export class TunnelUdpChannel implements UdpChannel {
  private messageCb: (from: Destination, data: Buffer) => void = () => {};
  private readonly closeCbs: (() => void)[] = [];
  private closed = false;
  bytesIn = 0;
  bytesOut = 0;

  constructor(
    private readonly session: SessionApi,
    private readonly stream: SessionStream,
    sinks: Map<number, (payload: Buffer) => void>,
  ) {
    sinks.set(stream.id, (p) => {
      const a = readAddress(p, 0);
      if (a === null) return;
      this.bytesIn += p.length - a.end;
      this.messageCb(a.dest, p.subarray(a.end));
    });
    stream.on('data', () => {});
    stream.on('error', () => {});
    stream.on('end', () => stream.destroy());
    stream.once('close', () => {
      sinks.delete(stream.id);
      this.close();
    });
  }

  send(dest: Destination, data: Buffer): void {
    if (this.closed) return;
    const p = Buffer.allocUnsafe(addressLength(dest) + data.length);
    data.copy(p, writeAddress(p, 0, dest));
    this.bytesOut += data.length;
    this.session.sendDatagram(this.stream.id, p);
  }

  onMessage(cb: (from: Destination, data: Buffer) => void): void {
    this.messageCb = cb;
  }

  onClose(cb: () => void): void {
    this.closeCbs.push(cb);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stream.destroy();
    for (const cb of this.closeCbs.splice(0)) cb();
  }
}

/** What a UDP forward needs besides its addresses. */
export interface UdpForwardOptions {
  /** Metric label: `tunnel.agent.forwards[N]`. */
  readonly name: string;
  /** Its `listen` as configured (an upgrade's new process takes over the socket by it). */
  readonly listenText: string;
  /** SO_RCVBUF of the local socket (0: the system default). */
  readonly receiveBuffer: number;
  readonly idleMs: number;
  /** An association that was open has ended: its access line (as the agent's TCP entries'). */
  readonly onEnd?: (
    peer: { remoteAddress: string; remotePort: number },
    r: EntryResult,
    startedAt: number,
  ) => void;
}

/** One client address's association. */
interface UdpClient {
  readonly address: string;
  readonly port: number;
  /** Where its datagrams go (the forward's `to` when it began: a reload's applies to new ones). */
  readonly to: Destination;
  ch: UdpChannel | null;
  /** Datagrams it sent while the association was being opened. */
  readonly queue: Buffer[];
  /** Why its association was refused: its datagrams are dropped with this code until `timer`. */
  refused: ErrorCode | null;
  timer: NodeJS.Timeout;
  readonly startedAt: number;
  /** Bytes from the client into the tunnel, and back to it. */
  bytesIn: number;
  bytesOut: number;
}

/** Datagrams a client sends while its association is being opened. */
const OPENING_QUEUE = 64;
/**
 * How long a client whose association was refused has its datagrams dropped before the next one
 * asks again (at most the idle time). Without it, a client that keeps sending would have an OPEN
 * sent, and refused, once per round trip to the relay, while the relay is at `max_streams`.
 */
const REFUSED_HOLD_MS = 1000;

export class UdpForward {
  private readonly socket: UdpSocket;
  private readonly clients = new Map<string, UdpClient>();
  /** Dropped here (queue full while opening, association refused); the kernel's are `kernel`'s. */
  private droppedHere = 0;
  private readonly kernel: KernelDropCounter;
  private bound = false;
  /** SO_RCVBUF asked for (0: the system default). */
  private receiveBuffer: number;

  constructor(
    private readonly listen: { host: string; port: number },
    private to: Destination,
    private readonly open: (to: Destination) => Promise<UdpChannel>,
    private readonly opts: UdpForwardOptions,
  ) {
    this.kernel = new KernelDropCounter(opts.name);
    this.receiveBuffer = opts.receiveBuffer;
    this.socket = createSocket({ type: isIP(listen.host) === 6 ? 'udp6' : 'udp4' });
    this.socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo.address, rinfo.port));
    this.socket.on('error', () => {});
  }

  start(): Promise<void> {
    const { name, listenText } = this.opts;
    // an upgrade handed this process the old one's socket (core/handover.ts)
    const handed = inherited('udp', name, listenText);
    return new Promise((resolve, reject) => {
      this.socket.once('error', reject);
      this.socket.bind(
        handed ? { fd: handed.fd } : { port: this.listen.port, address: this.listen.host },
        () => {
          this.socket.off('error', reject);
          this.bound = true;
          // the kernel's default (~208 KiB on Linux) drops a burst from a few thousand clients
          if (this.receiveBuffer > 0) this.socket.setRecvBufferSize(this.receiveBuffer);
          offer(this, 'udp', name, listenText, () => (this.bound ? dgramBound(this.socket) : null));
          resolve();
        },
      );
    });
  }

  address(): string {
    const a = this.socket.address();
    return a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  /** Associations open or being opened (not the clients held off after a refusal). */
  get sessions(): number {
    let n = 0;
    for (const c of this.clients.values()) if (c.refused === null) n++;
    return n;
  }

  /** Datagrams dropped so far, the kernel's included (read from /proc on Linux). */
  get dropped(): number {
    this.refreshMetrics();
    return this.droppedHere + this.kernel.total;
  }

  /** Counts what the kernel dropped on the local socket since the last call (scrape time). */
  refreshMetrics(): void {
    if (this.closed || !this.bound) return;
    const a = this.socket.address();
    this.kernel.refresh(a.address, a.port);
  }

  private drop(code: ErrorCode, n = 1): void {
    if (n === 0) return;
    this.droppedHere += n;
    metrics.udpDropped.labels(this.opts.name, code).inc(n);
  }

  private onMessage(msg: Buffer, address: string, port: number): void {
    const key = `${address}|${port}`;
    let c = this.clients.get(key);
    if (c === undefined) {
      if (!this.accepting) {
        this.drop('ZL_DRAINING'); // a reload removed it: its open associations only
        return;
      }
      const entry: UdpClient = {
        address,
        port,
        to: this.to,
        ch: null,
        queue: [msg],
        refused: null,
        timer: setTimeout(() => this.end(key), this.opts.idleMs),
        startedAt: Date.now(),
        bytesIn: 0,
        bytesOut: 0,
      };
      entry.timer.unref();
      c = entry;
      this.clients.set(key, entry);
      this.open(entry.to).then(
        (ch) => {
          if (this.clients.get(key) !== entry) {
            ch.close();
            return;
          }
          entry.ch = ch;
          ch.onMessage((_from, data) => {
            entry.timer.refresh();
            entry.bytesOut += data.length;
            this.socket.send(data, port, address);
          });
          ch.onClose(() => this.end(key));
          for (const q of entry.queue.splice(0)) this.forward(entry, ch, q);
        },
        (err: unknown) => {
          // refused (the relay's max_streams, its allow list, no relay up): what was queued is lost,
          // and so is what the client sends for a while, with the same code
          if (this.clients.get(key) !== entry) return;
          entry.refused = dialCode(err);
          this.drop(entry.refused, entry.queue.splice(0).length);
          clearTimeout(entry.timer);
          entry.timer = setTimeout(() => this.end(key), Math.min(REFUSED_HOLD_MS, this.opts.idleMs));
          entry.timer.unref();
        },
      );
      return;
    }
    if (c.refused !== null) {
      this.drop(c.refused);
      return;
    }
    c.timer.refresh();
    if (c.ch === null) {
      if (c.queue.length < OPENING_QUEUE) c.queue.push(msg);
      else this.drop('ZL_UDP_QUEUE_FULL');
    } else this.forward(c, c.ch, msg);
  }

  private forward(c: UdpClient, ch: UdpChannel, msg: Buffer): void {
    c.bytesIn += msg.length;
    ch.send(c.to, msg);
  }

  private end(key: string): void {
    const c = this.clients.get(key);
    if (c === undefined) return;
    this.clients.delete(key);
    clearTimeout(c.timer);
    if (!this.accepting && this.clients.size === 0) setImmediate(() => this.close());
    if (c.ch === null) return; // never opened: counted as dropped, no access line
    c.ch.close();
    this.opts.onEnd?.(
      { remoteAddress: c.address, remotePort: c.port },
      {
        method: 'FORWARD',
        dest: formatDestination(c.to),
        status: 200,
        reply: 0,
        bytesIn: c.bytesIn,
        bytesOut: c.bytesOut,
        error: null,
      },
      c.startedAt,
    );
  }

  private closed = false;
  private accepting = true;

  /**
   * A reload's settings for the same address: `to` for new associations, the socket's buffer at
   * once. True when either changed.
   */
  update(to: Destination, receiveBuffer: number): boolean {
    const changed =
      to.host !== this.to.host || to.port !== this.to.port || receiveBuffer !== this.receiveBuffer;
    this.to = to;
    if (receiveBuffer !== this.receiveBuffer && receiveBuffer > 0 && this.bound && !this.closed)
      this.socket.setRecvBufferSize(receiveBuffer);
    this.receiveBuffer = receiveBuffer;
    return changed;
  }

  /** Its listener name (`tunnel.agent.forwards[N]`). */
  get name(): string {
    return this.opts.name;
  }

  /**
   * Removed by a reload: no new associations (their datagrams are dropped as `ZL_DRAINING`); the
   * open ones go on until they end, then the socket closes.
   */
  stopAccepting(): void {
    this.accepting = false;
    if (this.clients.size === 0) this.close();
  }

  /** Closed: by `close`, or after `stopAccepting` once its last association ended. */
  get done(): boolean {
    return this.closed;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    withdraw(this);
    for (const key of [...this.clients.keys()]) this.end(key);
    this.socket.close();
  }
}

/** The coded reason an association could not be opened (`dialError`'s code). */
function dialCode(err: unknown): ErrorCode {
  return isZiplineError(err) ? err.code : 'ZL_TUNNEL_DIAL_FAILED';
}
