/**
 * A tunnel session: many `TunnelStream`s over one connection (src/tunnel/SPEC.md). One writer
 * with two lanes — control frames (PING, WINDOW_UPDATE, RST, GOAWAY, OPEN, OPEN_ACK) first, then
 * DATA round-robin across streams within their send windows and the connection window — and
 * everything produced in one turn leaves in one socket write (DataLane). Incoming bytes go
 * through a FrameReader (bounded work per turn); liveness is a Liveness (GOAWAY IDLE_TIMEOUT). A
 * fatal protocol error sends GOAWAY with its code and closes the connection; other sessions are
 * not affected.
 *
 * Agent-opened streams are odd, relay-opened even. OPEN carries kind and destination; the
 * receiving side answers OPEN_ACK (0 ok, else a SOCKS5-style status that ends the stream).
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { ZiplineError } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import { StreamCompressor, StreamDecompressor, zstdAvailable } from './compression.js';
import {
  DEFAULT_MAX_PAYLOAD,
  ERROR,
  ERROR_NAMES,
  FLAG,
  FRAME,
  OPEN_STATUS,
  type TunnelErrorCode,
} from './constants.js';
import { DataLane } from './data-lane.js';
import { FrameDecoder, FrameWriter, goawayPayload, recordAligned, u32Payload } from './frame.js';
import { FrameCounts } from './frame-counts.js';
import { FrameReader } from './frame-reader.js';
import { channelBinding } from './handshake.js';
import { Liveness, READ_DEADLINE_MS } from './liveness.js';
import type { OpenRequest, PeerSettings, SessionApi } from './session-api.js';
import { type StreamHost, TunnelStream } from './stream.js';
import { awaitOpenAck } from './stream-ends.js';

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
  /** Streams the peer may have open at once; more OPENs get RST REFUSED_STREAM. */
  readonly maxStreams?: number;
  /** An OPEN not answered within this ends with status 6 (TTL expired / timeout). */
  readonly openTimeoutMs?: number;
}

export type { OpenRequest } from './session-api.js';

/** Socket bytes queued beyond this stop the DATA lane until 'drain'. */
const SOCKET_HIGH_WATER = 256 * 1024;

export class TunnelSession extends EventEmitter implements StreamHost, SessionApi {
  readonly streams = new Map<number, TunnelStream>();
  readonly engine = 'js';
  readonly codecAvailable = zstdAvailable;
  readonly pingIntervalMs: number;
  rttMs = -1;
  closed = false;
  /** The peer said GOAWAY: no new streams. */
  goneAway = false;
  private readonly control = new FrameWriter(4096);
  private readonly data = new FrameWriter(64 * 1024);
  private readonly lane = new DataLane((s) => this.maybeRelease(s));
  private flushScheduled = false;
  private nextId: number;
  private connSendWindow: number;
  private connRecvUnacked = 0;
  /** Received DATA not yet consumed: never more than our connection window (the memory cap). */
  private connRecvOutstanding = 0;
  private lastPeerStream = 0;
  readonly maxPayload: number;
  readonly initialWindow: number;
  /** DATA/DATAGRAM payloads we send: min(ours, the peer's). */
  private sendPayload: number;
  private peerInitialWindow: number;
  private readonly maxWindow: number;
  readonly connWindow: number;
  private readonly liveness: Liveness;
  private readonly reader: FrameReader;
  private readonly maxStreams: number;
  private readonly openTimeoutMs: number;
  /** Peer-opened streams now open. */
  private peerStreams = 0;
  /** zstd on DATA this session sends and receives (negotiated in HELLO/HELLO_ACK). */
  compression = false;
  readonly frames = new FrameCounts();
  bytesIn = 0;
  bytesOut = 0;
  datagramsDropped = 0;
  /** DATA bytes given to zstd and what was sent for them (ratio = in / out). */
  get compressIn(): number {
    return this.lane.compressIn;
  }
  get compressOut(): number {
    return this.lane.compressOut;
  }
  streamsOpened = 0;
  readonly openedAt = Date.now();

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
    this.sendPayload = recordAligned(this.maxPayload);
    this.peerInitialWindow = this.initialWindow;
    this.pingIntervalMs = opts.pingIntervalMs ?? 2000;
    this.maxStreams = opts.maxStreams ?? 1024;
    this.openTimeoutMs = opts.openTimeoutMs ?? 15_000;
    const decoder = new FrameDecoder((t, f, s, p) => this.onFrame(t, f, s, p), this.maxPayload);
    this.reader = new FrameReader(socket, decoder, opts.framesPerTurn ?? 256, (code, message) =>
      this.fatal(code, message),
    );
    // frames are coalesced per turn already: Nagle would only add delayed-ACK stalls
    (socket as Duplex & { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.resume(); // it may come paused (a proxy handshake read before us)
    socket.on('drain', () => this.scheduleFlush());
    socket.on('error', () => {});
    socket.on('close', () => this.teardown());
    socket.on('end', () => this.teardown());
    this.liveness = new Liveness(
      this.pingIntervalMs,
      opts.misses ?? 3,
      () => this.ping(),
      (silent) =>
        this.fatal(ERROR.IDLE_TIMEOUT, `no frame for ${silent} ms (${opts.misses ?? 3} PING intervals)`),
    );
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
    return awaitOpenAck(stream, this.openTimeoutMs, () => stream.destroy());
  }

  /** Answers an incoming OPEN (the 'stream' event): 0 accepts, anything else refuses and ends it. */
  answer(stream: TunnelStream, status: number): void {
    this.controlFrame(FRAME.OPEN_ACK, 0, stream.id, Buffer.from([status]));
    if (status !== OPEN_STATUS.OK) {
      stream.reset = true;
      stream.destroy();
    }
  }

  binding(): Buffer {
    return channelBinding(this.socket);
  }

  /** What the peer accepts (from HELLO / HELLO_ACK): sizes we send within. */
  setPeer(peer: PeerSettings): void {
    this.sendPayload = recordAligned(Math.max(1024, Math.min(this.maxPayload, peer.maxPayload)));
    this.peerInitialWindow = peer.initialWindow;
    this.connSendWindow = peer.connectionWindow;
    this.scheduleFlush();
  }

  private newStream(id: number): TunnelStream {
    const s = new TunnelStream(id, this, this.peerInitialWindow, this.initialWindow, this.maxWindow);
    if (this.compression) {
      s.compressor = new StreamCompressor();
      s.decompressor = new StreamDecompressor(this.maxPayload);
    }
    this.streams.set(id, s);
    this.streamsOpened++;
    return s;
  }

  /** A frame for the layers above (HELLO, HELLO_ACK, REQUEST, RESPONSE) on the control lane. */
  sendControl(type: number, flags: number, id: number, payload: Buffer | null): void {
    this.controlFrame(type, flags, id, payload);
  }

  /**
   * A DATAGRAM for association `id` (payload: address + datagram). Not window-controlled: dropped
   * and counted when the socket already holds more than its high-water mark.
   */
  sendDatagram(id: number, payload: Buffer): boolean {
    if (this.closed || payload.length > this.sendPayload || this.socket.writableLength > SOCKET_HIGH_WATER) {
      this.datagramsDropped++;
      return false;
    }
    this.data.push(FRAME.DATAGRAM, 0, id, payload);
    this.frames.sent(FRAME.DATAGRAM);
    this.scheduleFlush();
    return true;
  }

  /** Streams opened by the peer that are still open. */
  /** Adds frame counts since the last call to the metric (scrape time). */
  flushFrameMetrics(): void {
    this.frames.flush();
  }

  // ---- reading --------------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    this.bytesIn += chunk.length;
    this.reader.feed(chunk);
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    // a fatal frame ends the session in the middle of a chunk: the frames after it are not acted
    // on (an OPEN there would dial a stream nothing could ever close)
    if (this.closed) return;
    this.liveness.seen(Date.now());
    this.frames.received(type);
    switch (type) {
      case FRAME.DATA: {
        const s = this.streams.get(id);
        let data = payload;
        if (s !== undefined && s.decompressor !== null) {
          if (flags & FLAG.COMPRESSED) data = s.decompressor.decompress(payload);
          else if (payload.length > 0) s.decompressor.reset();
        } else if (flags & FLAG.COMPRESSED && s !== undefined) {
          this.fatal(ERROR.PROTOCOL_ERROR, 'COMPRESSED DATA on a session without a codec');
          return;
        }
        this.connRecvOutstanding += data.length;
        if (this.connRecvOutstanding > this.connWindow) {
          this.fatal(ERROR.FLOW_CONTROL_ERROR, 'DATA beyond the connection window');
          return;
        }
        if (s === undefined) {
          // a stream we already reset: its in-flight data is dropped, and its credit returned
          // (for a COMPRESSED payload the count is approximate: the sender counted more)
          this.consumed(data.length);
          return;
        }
        if (s.finReceived) {
          // (as the native engine; pushing after the end would throw in Node's stream)
          this.fatal(ERROR.PROTOCOL_ERROR, `DATA after FIN on stream ${id}`);
          return;
        }
        if (!s.receive(data, (flags & FLAG.FIN) !== 0)) {
          this.fatal(ERROR.FLOW_CONTROL_ERROR, `stream ${id} sent beyond its window`);
          return;
        }
        this.maybeRelease(s);
        return;
      }
      case FRAME.WINDOW_UPDATE: {
        const delta = payload.length === 4 ? payload.readUInt32BE(0) : 0;
        if (delta === 0 || delta > 0x7fff_ffff) {
          this.fatal(ERROR.FLOW_CONTROL_ERROR, `WINDOW_UPDATE delta ${delta}`);
          return;
        }
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
        if ((id & 1) === (this.nextId & 1) || id <= this.lastPeerStream) {
          this.fatal(ERROR.PROTOCOL_ERROR, `OPEN with stream id ${id}: wrong parity or not increasing`);
          return;
        }
        this.lastPeerStream = id;
        if (this.goneAway || this.closingDown || payload.length < 1 || this.peerStreams >= this.maxStreams) {
          this.controlFrame(FRAME.RST, 0, id, u32Payload(ERROR.REFUSED_STREAM));
          this.emit('refused', id);
          return;
        }
        const s = this.newStream(id);
        this.peerStreams++;
        s.once('close', () => this.peerStreams--);
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
          // only an echo of a PING of ours is a round trip: one from the future, or older than a
          // live session's silence can be, is a peer's garbage and would skew the relay choice
          if (payload.length !== 8) return;
          const ms = Number(process.hrtime.bigint() - payload.readBigUInt64BE(0)) / 1e6;
          if (ms < 0 || ms > READ_DEADLINE_MS) return;
          this.rttMs = ms;
          this.emit('rtt', ms);
        } else this.controlFrame(FRAME.PING, FLAG.ACK, 0, payload);
        return;
      }
      case FRAME.GOAWAY: {
        if (this.goneAway) return;
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
    this.lane.wake(s);
    this.scheduleFlush();
  }

  sendWindowUpdate(s: TunnelStream, bytes: number): void {
    if (!s.reset && !this.closed) this.controlFrame(FRAME.WINDOW_UPDATE, 0, s.id, u32Payload(bytes));
  }

  sendReset(s: TunnelStream, code: TunnelErrorCode): void {
    if (!this.closed) this.controlFrame(FRAME.RST, 0, s.id, u32Payload(code));
  }

  consumed(bytes: number): void {
    this.connRecvOutstanding -= bytes;
    this.connRecvUnacked += bytes;
    if (this.connRecvUnacked >= this.connWindow / 4 && !this.closed) {
      this.controlFrame(FRAME.WINDOW_UPDATE, 0, 0, u32Payload(this.connRecvUnacked));
      this.connRecvUnacked = 0;
    }
  }

  release(s: TunnelStream): void {
    this.streams.delete(s.id);
    this.lane.forget(s);
  }

  private maybeRelease(s: TunnelStream): void {
    if (!s.done) return;
    this.release(s);
    s.maybeClose();
  }

  // ---- writing --------------------------------------------------------------------------------

  private controlFrame(type: number, flags: number, id: number, payload: Buffer | null): void {
    if (this.closed) return;
    this.control.push(type, flags, id, payload);
    this.frames.sent(type);
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
    this.connSendWindow -= this.lane.fill(
      this.data,
      SOCKET_HIGH_WATER - this.socket.writableLength,
      this.connSendWindow,
      this.sendPayload,
    );
    this.frames.sent(FRAME.DATA, this.lane.framesWritten);
    const data = this.data.take();
    if (data !== null) parts.push(data);
    let ok = true;
    if (parts.length === 1) {
      this.bytesOut += (parts[0] as Buffer).length;
      ok = this.socket.write(parts[0] as Buffer);
    } else if (parts.length > 1) {
      const out = Buffer.concat(parts);
      this.bytesOut += out.length;
      ok = this.socket.write(out);
    }
    // More to send within the windows: on the next turn while the socket takes it. A full socket
    // (budget spent, or this write said so) resumes on 'drain' instead: rescheduling then would
    // spin the event loop until the kernel takes bytes. Streams out of window resume on
    // WINDOW_UPDATE.
    if (
      ok &&
      SOCKET_HIGH_WATER - this.socket.writableLength > 0 &&
      this.connSendWindow > 0 &&
      this.lane.hasSendable()
    ) {
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    }
  }

  // ---- liveness and ends ----------------------------------------------------------------------

  /** Sends a PING now (its ACK updates `rttMs`). */
  ping(): void {
    const p = Buffer.allocUnsafe(8);
    p.writeBigUInt64BE(process.hrtime.bigint());
    this.controlFrame(FRAME.PING, 0, 0, p);
  }

  /** We sent GOAWAY: peer OPENs are refused. */
  closingDown = false;

  /** Graceful: GOAWAY (no new streams); the connection closes once the streams are done. */
  goAway(code: TunnelErrorCode = ERROR.NO_ERROR, retryAfterMs = 0): void {
    this.closingDown = true;
    this.controlFrame(FRAME.GOAWAY, 0, 0, goawayPayload(this.lastPeerStream, code, retryAfterMs, ''));
  }

  /** A fatal error: GOAWAY with its code, then close. */
  fatal(code: TunnelErrorCode, reason: string): void {
    if (this.closed) return;
    this.control.push(FRAME.GOAWAY, 0, 0, goawayPayload(this.lastPeerStream, code, 0, reason));
    this.frames.sent(FRAME.GOAWAY);
    const bytes = this.control.take();
    if (bytes !== null) this.socket.end(bytes);
    metrics.tunnelProtocolErrors.labels(ERROR_NAMES[code] ?? String(code)).inc();
    this.emit('fatal', code, reason);
    this.teardown();
  }

  /** Closes now: frames still queued (a GOAWAY just sent) are written first, then FIN. */
  close(): void {
    if (this.closed) return;
    const ctl = this.control.take();
    this.teardown();
    if (ctl !== null) this.socket.end(ctl);
    else this.socket.end();
    // a peer that never closes its side must not keep the socket: destroy soon after
    const s = this.socket;
    setTimeout(() => s.destroy(), 1000).unref();
  }

  /** Closes at once, dropping anything queued. */
  destroy(): void {
    this.teardown();
    this.socket.destroy();
  }

  private teardown(): void {
    if (this.closed) return;
    this.closed = true;
    this.liveness.stop();
    this.reader.stop();
    for (const s of [...this.streams.values()]) {
      s.reset = true;
      s.abort(new ZiplineError('ZL_TUNNEL_CLOSED', 'tunnel session closed'));
    }
    this.streams.clear();
    // its frames reach the metric now: a session that ends between two scrapes is counted too
    this.frames.flush();
    this.emit('close');
  }
}
