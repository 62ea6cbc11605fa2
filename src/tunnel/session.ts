/**
 * A tunnel session: many `TunnelStream`s over one connection (src/tunnel/SPEC.md). One writer
 * with two lanes — control frames (PING, WINDOW_UPDATE, RST, GOAWAY, OPEN, OPEN_ACK) first, then
 * DATA round-robin across streams within their send windows and the connection window — and
 * everything produced in one turn leaves in one socket write. Liveness: a PING every interval,
 * any frame counts as alive, dead after `misses` silent intervals (GOAWAY IDLE_TIMEOUT); a jump of
 * the wall clock (sleep/resume) sends a PING at once. A fatal protocol error sends GOAWAY with its
 * code and closes the connection; other sessions are not affected.
 *
 * Agent-opened streams are odd, relay-opened even. OPEN carries kind and destination; the
 * receiving side answers OPEN_ACK (0 ok, else a SOCKS5-style status that ends the stream).
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { ZiplineError } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import { DEFAULT_MAX_PAYLOAD, ERROR, FLAG, FRAME, OPEN_STATUS, type TunnelErrorCode } from './constants.js';
import { FrameDecoder, FrameWriter, TunnelProtocolError } from './frame.js';
import { type StreamHost, TunnelStream } from './stream.js';

export interface SessionOptions {
  readonly role: 'agent' | 'relay';
  readonly maxPayload?: number;
  readonly initialWindow?: number;
  readonly maxWindow?: number;
  readonly connectionWindow?: number;
  readonly pingIntervalMs?: number;
  readonly misses?: number;
  /** Frames decoded per turn before yielding (PINGs stay on time under load). */
  readonly framesPerTurn?: number;
}

export interface OpenRequest {
  readonly kind: number;
  /** The OPEN payload after the kind byte: address type, address, port (SOCKS5 encoding). */
  readonly address: Buffer;
}

const ERROR_NAMES: Record<number, string> = Object.fromEntries(Object.entries(ERROR).map(([k, v]) => [v, k]));

/** Socket bytes queued beyond this stop the DATA lane until 'drain'. */
const SOCKET_HIGH_WATER = 256 * 1024;

export class TunnelSession extends EventEmitter implements StreamHost {
  readonly streams = new Map<number, TunnelStream>();
  readonly pingIntervalMs: number;
  rttMs = -1;
  closed = false;
  /** The peer said GOAWAY: no new streams. */
  goneAway = false;
  private readonly decoder: FrameDecoder;
  private readonly control = new FrameWriter(4096);
  private readonly data = new FrameWriter(64 * 1024);
  private readonly ready: TunnelStream[] = [];
  private readonly readySet = new Set<TunnelStream>();
  private flushScheduled = false;
  private nextId: number;
  private connSendWindow: number;
  private connRecvUnacked = 0;
  private lastPeerStream = 0;
  private readonly maxPayload: number;
  private readonly initialWindow: number;
  private readonly maxWindow: number;
  private readonly connWindow: number;
  private lastFrameAt = Date.now();
  private lastTickWall = Date.now();
  private lastTickMono = performance.now();
  private readonly timer: NodeJS.Timeout;
  private pendingChunk: Buffer | null = null;
  private pendingAt = 0;
  private readonly framesPerTurn: number;
  private readonly misses: number;

  constructor(
    readonly socket: Duplex,
    opts: SessionOptions,
  ) {
    super();
    this.nextId = opts.role === 'agent' ? 1 : 2;
    this.maxPayload = opts.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.initialWindow = opts.initialWindow ?? 256 * 1024;
    this.maxWindow = opts.maxWindow ?? 8 * 1024 * 1024;
    this.connWindow = opts.connectionWindow ?? 32 * 1024 * 1024;
    this.connSendWindow = this.connWindow;
    this.pingIntervalMs = opts.pingIntervalMs ?? 2000;
    this.misses = opts.misses ?? 3;
    this.framesPerTurn = opts.framesPerTurn ?? 256;
    this.decoder = new FrameDecoder((t, f, s, p) => this.onFrame(t, f, s, p), this.maxPayload);
    // frames are coalesced per turn already: Nagle would only add delayed-ACK stalls
    (socket as Duplex & { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.scheduleFlush());
    socket.on('error', () => {});
    socket.on('close', () => this.teardown());
    socket.on('end', () => this.teardown());
    this.timer = setInterval(() => this.tick(), this.pingIntervalMs);
    this.timer.unref();
  }

  // ---- opening streams ------------------------------------------------------------------------

  /** Opens a stream to `address` (SOCKS5 encoding: type, address, port). Resolves on OPEN_ACK 0. */
  open(kind: number, address: Buffer): Promise<TunnelStream> {
    if (this.closed || this.goneAway) {
      return Promise.reject(
        new ZiplineError('ZL_TUNNEL_CLOSED', 'the tunnel session is closed or going away'),
      );
    }
    const id = this.nextId;
    this.nextId += 2;
    const stream = this.newStream(id);
    this.controlFrame(FRAME.OPEN, 0, id, Buffer.concat([Buffer.from([kind]), address]));
    return new Promise((resolve, reject) => {
      stream.once('open-ack', (status: number) => {
        if (status === OPEN_STATUS.OK) resolve(stream);
        else {
          const err = Object.assign(
            new ZiplineError('ZL_TUNNEL_OPEN_REFUSED', `OPEN refused with status ${status}`),
            {
              openStatus: status,
            },
          );
          stream.destroy();
          reject(err);
        }
      });
      stream.once('close', () =>
        reject(new ZiplineError('ZL_TUNNEL_CLOSED', 'stream closed before OPEN_ACK')),
      );
    });
  }

  /** Answers an incoming OPEN (the 'stream' event): 0 accepts, anything else refuses and ends it. */
  answer(stream: TunnelStream, status: number): void {
    this.controlFrame(FRAME.OPEN_ACK, 0, stream.id, Buffer.from([status]));
    if (status !== OPEN_STATUS.OK) {
      stream.reset = true;
      stream.destroy();
    }
  }

  private newStream(id: number): TunnelStream {
    const s = new TunnelStream(id, this, this.initialWindow, this.initialWindow, this.maxWindow);
    this.streams.set(id, s);
    return s;
  }

  // ---- reading --------------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    if (this.pendingChunk !== null) {
      // still working through an earlier chunk: keep order
      this.pendingChunk = Buffer.concat([this.pendingChunk.subarray(this.pendingAt), chunk]);
      this.pendingAt = 0;
      return;
    }
    this.decode(chunk, 0);
  }

  private decode(chunk: Buffer, at: number): void {
    try {
      const stop = this.decoder.feed(chunk, at, this.framesPerTurn);
      if (stop < chunk.length) {
        this.pendingChunk = chunk;
        this.pendingAt = stop;
        this.socket.pause();
        setImmediate(() => this.resumeDecode());
      }
    } catch (err) {
      if (err instanceof TunnelProtocolError) this.fatal(err.code, err.message);
      else throw err;
    }
  }

  private resumeDecode(): void {
    const chunk = this.pendingChunk;
    const at = this.pendingAt;
    this.pendingChunk = null;
    if (chunk === null || this.closed) return;
    this.socket.resume();
    this.decode(chunk, at);
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    this.lastFrameAt = Date.now();
    switch (type) {
      case FRAME.DATA: {
        const s = this.streams.get(id);
        this.connRecvUnacked += payload.length;
        if (this.connRecvUnacked >= this.connWindow / 2) {
          this.controlFrame(FRAME.WINDOW_UPDATE, 0, 0, u32(this.connRecvUnacked));
          this.connRecvUnacked = 0;
        }
        if (s === undefined) return; // a stream we already reset: its in-flight data is dropped
        if (!s.receive(payload, (flags & FLAG.FIN) !== 0)) {
          this.fatal(ERROR.FLOW_CONTROL_ERROR, `stream ${id} sent beyond its window`);
          return;
        }
        this.maybeRelease(s);
        return;
      }
      case FRAME.WINDOW_UPDATE: {
        const delta = payload.readUInt32BE(0);
        if (id === 0) {
          this.connSendWindow += delta;
          if (this.connSendWindow > 0x7fff_ffff)
            this.fatal(ERROR.FLOW_CONTROL_ERROR, 'connection window overflow');
        } else {
          const s = this.streams.get(id);
          if (s === undefined) return;
          s.sendWindow += delta;
          if (s.sendWindow > 0x7fff_ffff)
            this.fatal(ERROR.FLOW_CONTROL_ERROR, `stream ${id} window overflow`);
        }
        this.scheduleFlush();
        return;
      }
      case FRAME.OPEN: {
        if (this.goneAway || this.streams.has(id) || (id & 1) === (this.nextId & 1) || payload.length < 1) {
          this.controlFrame(FRAME.RST, 0, id, u32(ERROR.REFUSED_STREAM));
          return;
        }
        const s = this.newStream(id);
        this.lastPeerStream = Math.max(this.lastPeerStream, id);
        this.emit('stream', s, {
          kind: payload[0] as number,
          address: payload.subarray(1),
        } satisfies OpenRequest);
        return;
      }
      case FRAME.OPEN_ACK: {
        this.streams.get(id)?.emit('open-ack', payload[0] ?? OPEN_STATUS.FAILURE);
        return;
      }
      case FRAME.RST: {
        const s = this.streams.get(id);
        if (s !== undefined) s.resetByPeer(payload.length >= 4 ? payload.readUInt32BE(0) : ERROR.CANCEL);
        return;
      }
      case FRAME.PING: {
        if (flags & FLAG.ACK) {
          if (payload.length === 8)
            this.rttMs = Number(process.hrtime.bigint() - payload.readBigUInt64BE(0)) / 1e6;
          this.emit('rtt', this.rttMs);
        } else this.controlFrame(FRAME.PING, FLAG.ACK, 0, payload);
        return;
      }
      case FRAME.GOAWAY: {
        this.goneAway = true;
        const code = payload.length >= 8 ? payload.readUInt32BE(4) : ERROR.NO_ERROR;
        this.emit('goaway', code, payload.length >= 12 ? payload.readUInt32BE(8) : 0);
        return;
      }
      default:
        // HELLO, HELLO_ACK, REQUEST, RESPONSE, DATAGRAM: for the layers above
        this.emit('frame', type, flags, id, payload);
    }
  }

  // ---- StreamHost -----------------------------------------------------------------------------

  wakeWriter(s: TunnelStream): void {
    if (!this.readySet.has(s)) {
      this.readySet.add(s);
      this.ready.push(s);
    }
    this.scheduleFlush();
  }

  sendWindowUpdate(s: TunnelStream, bytes: number): void {
    if (!s.reset && !this.closed) this.controlFrame(FRAME.WINDOW_UPDATE, 0, s.id, u32(bytes));
  }

  sendReset(s: TunnelStream, code: TunnelErrorCode): void {
    if (!this.closed) this.controlFrame(FRAME.RST, 0, s.id, u32(code));
  }

  release(s: TunnelStream): void {
    this.streams.delete(s.id);
    this.readySet.delete(s);
  }

  private maybeRelease(s: TunnelStream): void {
    if (s.done) this.release(s);
  }

  // ---- writing --------------------------------------------------------------------------------

  private controlFrame(type: number, flags: number, id: number, payload: Buffer | null): void {
    if (this.closed) return;
    this.control.push(type, flags, id, payload);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.closed) return;
    this.flushScheduled = true;
    queueMicrotask(() => this.flush());
  }

  /** Control lane first, then DATA round-robin within windows, all in one socket write. */
  private flush(): void {
    this.flushScheduled = false;
    if (this.closed) return;
    const parts: Buffer[] = [];
    const ctl = this.control.take();
    if (ctl !== null) parts.push(ctl);
    let budget = SOCKET_HIGH_WATER - this.socket.writableLength;
    let progress = true;
    while (budget > 0 && this.ready.length > 0 && progress) {
      progress = false;
      for (let n = this.ready.length; n > 0 && budget > 0; n--) {
        const s = this.ready.shift() as TunnelStream;
        const max = Math.min(this.maxPayload, s.sendWindow, this.connSendWindow, budget);
        const chunk = s.takeChunk(max);
        if (chunk !== null) {
          s.sendWindow -= chunk.length;
          this.connSendWindow -= chunk.length;
          budget -= chunk.length;
          progress = true;
        }
        const fin = s.finQueued && !s.finSent && s.queuedBytes === 0;
        if (chunk !== null || fin) {
          this.data.push(FRAME.DATA, fin ? FLAG.FIN : 0, s.id, chunk);
          if (fin) {
            s.finSent = true;
            progress = true;
            this.maybeRelease(s);
          }
        }
        if ((s.queuedBytes > 0 || (s.finQueued && !s.finSent)) && !s.reset) this.ready.push(s);
        else this.readySet.delete(s);
      }
    }
    const data = this.data.take();
    if (data !== null) parts.push(data);
    let ok = true;
    if (parts.length === 1) ok = this.socket.write(parts[0] as Buffer);
    else if (parts.length > 1) ok = this.socket.write(Buffer.concat(parts));
    // more to send within the windows: after 'drain' if the socket is full, else on the next turn
    if (ok && this.connSendWindow > 0 && this.ready.some((x) => x.sendWindow > 0 || x.queuedBytes === 0)) {
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    }
  }

  // ---- liveness and ends ----------------------------------------------------------------------

  private tick(): void {
    const wall = Date.now();
    const mono = performance.now();
    const jumped = Math.abs(wall - this.lastTickWall - (mono - this.lastTickMono)) > this.pingIntervalMs;
    this.lastTickWall = wall;
    this.lastTickMono = mono;
    if (!jumped && wall - this.lastFrameAt > this.pingIntervalMs * this.misses) {
      this.fatal(ERROR.IDLE_TIMEOUT, `no frame for ${this.misses} PING intervals`);
      return;
    }
    if (jumped) this.lastFrameAt = wall; // a sleep/resume: give the peer a fresh chance
    this.ping();
  }

  /** Sends a PING now (its ACK updates `rttMs`). */
  ping(): void {
    const p = Buffer.allocUnsafe(8);
    p.writeBigUInt64BE(process.hrtime.bigint());
    this.controlFrame(FRAME.PING, 0, 0, p);
  }

  /** Graceful: GOAWAY (no new streams); the connection closes once the streams are done. */
  goAway(code: TunnelErrorCode = ERROR.NO_ERROR, retryAfterMs = 0): void {
    const p = Buffer.alloc(12);
    p.writeUInt32BE(this.lastPeerStream, 0); // the last stream the peer opened that we took
    p.writeUInt32BE(code, 4);
    p.writeUInt32BE(retryAfterMs, 8);
    this.controlFrame(FRAME.GOAWAY, 0, 0, p);
  }

  /** A fatal error: GOAWAY with its code, then close. */
  fatal(code: TunnelErrorCode, reason: string): void {
    if (this.closed) return;
    const p = Buffer.alloc(12 + Buffer.byteLength(reason));
    p.writeUInt32BE(this.lastPeerStream, 0);
    p.writeUInt32BE(code, 4);
    p.writeUInt32BE(0, 8);
    p.write(reason, 12);
    this.control.push(FRAME.GOAWAY, 0, 0, p);
    const bytes = this.control.take();
    if (bytes !== null) this.socket.end(bytes);
    metrics.tunnelProtocolErrors.labels(ERROR_NAMES[code] ?? String(code)).inc();
    this.emit('fatal', code, reason);
    this.teardown();
  }

  close(): void {
    this.teardown();
    this.socket.destroy();
  }

  private teardown(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const s of [...this.streams.values()]) {
      s.reset = true;
      s.abort(new ZiplineError('ZL_TUNNEL_CLOSED', 'tunnel session closed'));
    }
    this.streams.clear();
    this.emit('close');
  }
}

function u32(v: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(v);
  return b;
}
