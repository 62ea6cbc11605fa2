/**
 * A tunnel session run by the native engine (native/tunnel/): the connection, TLS, frames,
 * windows, liveness and attached streams live on the engine's thread; this object is its
 * JavaScript face, with the surface of `TunnelSession` (session-api.ts), so the relay and agent
 * use either without knowing.
 *
 * Lifecycle: `NativeSession.start(socket, …)` hands the connected socket's descriptor to the
 * engine (JavaScript's socket is closed at once; the engine holds its own copy) and the TLS
 * handshake runs there: 'secure' (TlsInfo) or 'tls-error' (message), then 'close' if it failed.
 * The session is `closed` for JavaScript as soon as it ends here (close, destroy, fatal) or
 * there (EV.closed); the engine's record is released when the engine reports it closed, so a
 * GOAWAY queued by `fatal` still leaves. Streams attached to sockets report their own ends
 * (EV.stDone) before EV.closed.
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { ZiplineError } from '../../errors.js';
import { metrics } from '../../metrics/catalog.js';
import { DEFAULT_MAX_PAYLOAD, ERROR, ERROR_NAMES, OPEN_STATUS, type TunnelErrorCode } from '../constants.js';
import { FrameCounts } from '../frame-counts.js';
import type { SessionOptions } from '../session.js';
import type { OpenRequest, PeerSettings, SessionApi } from '../session-api.js';
import { awaitOpenAck } from '../stream-ends.js';
import { C, type DoneReason, EV, engine, SLOT_TYPES } from './binding.js';
import { NativeStream, type NativeStreamHost } from './native-stream.js';

/** What the TLS handshake established (zeros and 'plain' over plain TCP). */
export interface TlsInfo {
  /** RFC 8446 exporter, label EXPORTER-zipline-tunnel-v1: the HELLO proof's channel binding. */
  readonly exporter: Buffer;
  /** SHA-256 of the peer's certificate, lower-case hex ('' when it sent none). */
  readonly fingerprint: string;
  readonly cipher: string;
}

/** TLS for a native session: a context from `tlsContext`, and for agents the name to send/check. */
export interface NativeTls {
  readonly ctx: number;
  readonly serverName?: string | undefined;
  /** Verify the certificate's name against serverName (with a CA; a pin is checked by the caller). */
  readonly verifyName?: boolean;
}

/** A TLS context in the engine (PEM text in; `dropTlsContext` when replaced). */
export function tlsContext(
  server: boolean,
  opts: { cert?: string; key?: string; ca?: string; ciphers: string },
): number {
  return engine.b.tlsContext(server, opts.cert ?? null, opts.key ?? null, opts.ca ?? null, opts.ciphers);
}

export function dropTlsContext(id: number): void {
  engine.binding?.tlsContextDrop(id);
}

const ZERO32 = Buffer.alloc(32);

export class NativeSession extends EventEmitter implements SessionApi, NativeStreamHost {
  readonly streams = new Map<number, NativeStream>();
  readonly engine = 'native';
  readonly codecAvailable = engine.zstd;
  readonly pingIntervalMs: number;
  readonly frames = new FrameCounts();
  rttMs = -1;
  closed = false;
  goneAway = false;
  closingDown = false;
  compression = false;
  streamsOpened = 0;
  readonly openedAt = Date.now();
  tls: TlsInfo | null = null;
  private nextId: number;
  private readonly openTimeoutMs: number;
  private readonly stats = new Float64Array(40);
  private released = false;
  private engineClosed = false;

  private constructor(
    readonly sid: number,
    opts: SessionOptions,
  ) {
    super();
    this.nextId = opts.role === 'agent' ? 1 : 2;
    this.pingIntervalMs = opts.pingIntervalMs ?? 2000;
    this.openTimeoutMs = opts.openTimeoutMs ?? 15_000;
    engine.register(sid, this);
  }

  /** Hands a connected socket to the engine (JavaScript's socket is closed); TLS starts there. */
  static start(socket: Socket, opts: SessionOptions, tls: NativeTls | null): NativeSession {
    const handle = (socket as unknown as { _handle?: { fd?: number } | null })._handle;
    const fd = typeof handle?.fd === 'number' ? handle.fd : -1;
    if (fd < 0) throw new ZiplineError('ZL_TUNNEL_CLOSED', 'the connection has no descriptor');
    // bytes already read: past a proxy's handshake (an agent's `via`), or a relay's first TLS
    // bytes that came with a PROXY protocol header (the engine's TLS reads them before the socket)
    const chunks: Buffer[] = [];
    for (let c = socket.read() as Buffer | null; c !== null; c = socket.read() as Buffer | null)
      chunks.push(c);
    const initial = chunks.length > 0 ? Buffer.concat(chunks) : null;
    const sid = engine.b.session(
      fd,
      opts.role === 'agent',
      tls?.ctx ?? 0,
      tls?.serverName ?? null,
      tls?.verifyName === true,
      [
        opts.maxPayload ?? DEFAULT_MAX_PAYLOAD,
        opts.initialWindow ?? 256 * 1024,
        opts.maxWindow ?? 8 * 1024 * 1024,
        opts.connectionWindow ?? 32 * 1024 * 1024,
        opts.pingIntervalMs ?? 2000,
        opts.misses ?? 3,
        opts.maxStreams ?? 1024,
        opts.framesPerTurn ?? 256,
      ],
      initial,
    );
    socket.destroy(); // the engine holds its own descriptor
    return new NativeSession(sid, opts);
  }

  /** Resolves once TLS is up (at once on plain TCP); rejects on a failed handshake or the deadline. */
  handshake(timeoutMs: number): Promise<TlsInfo> {
    if (this.tls !== null) return Promise.resolve(this.tls);
    return new Promise((resolve, reject) => {
      const done = (err: Error | null, info?: TlsInfo): void => {
        clearTimeout(timer);
        this.off('secure', onSecure);
        this.off('tls-error', onError);
        this.off('close', onClose);
        if (err !== null) {
          this.destroy();
          reject(err);
        } else resolve(info as TlsInfo);
      };
      const onSecure = (info: TlsInfo): void => done(null, info);
      const onError = (message: string): void => done(new ZiplineError('ZL_TUNNEL_TLS', `TLS: ${message}`));
      const onClose = (): void =>
        done(new ZiplineError('ZL_TUNNEL_TLS', 'the connection closed during the TLS handshake'));
      const timer = setTimeout(
        () => done(new ZiplineError('ZL_TUNNEL_TLS', `TLS handshake took over ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.once('secure', onSecure);
      this.once('tls-error', onError);
      this.once('close', onClose);
    });
  }

  // ---- NativeStreamHost -------------------------------------------------------------------------

  command(kind: number, stream: number, a = 0, data: Buffer | null = null, fd = -1): void {
    if (!this.released) engine.b.command(kind, this.sid, stream, a, 0, 0, 0, data, fd);
  }

  forget(stream: NativeStream): void {
    if (this.streams.get(stream.id) === stream) this.streams.delete(stream.id);
  }

  // ---- SessionApi -------------------------------------------------------------------------------

  binding(): Buffer {
    return this.tls?.exporter ?? ZERO32;
  }

  open(kind: number, address: Buffer): Promise<NativeStream> {
    if (this.closed || this.goneAway) {
      return Promise.reject(
        new ZiplineError('ZL_TUNNEL_CLOSED', 'the tunnel session is closed or going away'),
      );
    }
    const id = this.nextId;
    this.nextId += 2;
    const stream = this.newStream(id);
    this.command(C.open, id, 0, Buffer.concat([Buffer.from([kind]), address]));
    return awaitOpenAck(stream, this.openTimeoutMs, (status) => {
      // a refusal's OPEN_ACK ended the stream (no RST); a timeout resets it
      if (status !== OPEN_STATUS.TIMEOUT) stream.reset = true;
      stream.destroy();
    });
  }

  answer(stream: NativeStream, status: number): void {
    this.command(C.answer, stream.id, status);
    if (status !== OPEN_STATUS.OK) {
      stream.reset = true;
      stream.destroy();
    }
  }

  setPeer(peer: PeerSettings): void {
    engine.b.command(
      C.setPeer,
      this.sid,
      0,
      peer.maxPayload,
      peer.initialWindow,
      peer.connectionWindow,
      this.compression ? 1 : 0,
    );
  }

  sendControl(type: number, flags: number, id: number, payload: Buffer | null): void {
    if (!this.closed) engine.b.command(C.control, this.sid, id, type, flags, 0, 0, payload);
  }

  sendDatagram(id: number, payload: Buffer): boolean {
    if (this.closed) return false;
    this.command(C.datagram, id, 0, payload);
    return true; // a datagram the engine cannot queue is dropped and counted there
  }

  ping(): void {
    if (!this.closed) this.command(C.ping, 0);
  }

  goAway(code: TunnelErrorCode = ERROR.NO_ERROR, retryAfterMs = 0): void {
    this.closingDown = true;
    if (!this.closed) engine.b.command(C.goaway, this.sid, 0, code, retryAfterMs, 0, 0);
  }

  /** A fatal error decided here (AUTH_FAILED, a frame before HELLO): GOAWAY with it, then close. */
  fatal(code: TunnelErrorCode, reason: string): void {
    if (this.closed) return;
    this.command(C.fatal, 0, code, Buffer.from(reason.slice(0, 180)));
    metrics.tunnelProtocolErrors.labels(ERROR_NAMES[code] ?? String(code)).inc();
    this.emit('fatal', code, reason);
    this.teardown();
  }

  close(): void {
    if (this.closed) return;
    this.command(C.close, 0);
    this.teardown();
  }

  destroy(): void {
    if (!this.closed) this.command(C.destroy, 0);
    this.teardown();
  }

  get bytesIn(): number {
    return this.refresh()[0] as number;
  }

  get bytesOut(): number {
    return this.refresh()[1] as number;
  }

  get compressIn(): number {
    return this.refresh()[2] as number;
  }

  get compressOut(): number {
    return this.refresh()[3] as number;
  }

  get datagramsDropped(): number {
    return this.refresh()[4] as number;
  }

  flushFrameMetrics(): void {
    const s = this.refresh();
    for (let slot = 1; slot < SLOT_TYPES.length; slot++) {
      const type = SLOT_TYPES[slot] as number;
      this.frames.in[type] = s[8 + slot] as number;
      this.frames.out[type] = s[24 + slot] as number;
    }
    this.frames.flush();
  }

  /** The engine's counters (the last ones read once it has forgotten the session). */
  private refresh(): Float64Array {
    if (!this.released) engine.binding?.stats(this.sid, this.stats);
    return this.stats;
  }

  // ---- events from the engine -------------------------------------------------------------------

  onEngineEvent(
    type: number,
    _sid: number,
    id: number,
    a: number,
    b: number,
    x: number,
    y: number,
    data: Buffer | null,
    text: string | null,
  ): void {
    switch (type) {
      case EV.stDone:
        this.streams.get(id)?.onDone(a as DoneReason, b, x, y);
        return;
      case EV.stData:
        this.streams.get(id)?.onData(data, a !== 0);
        return;
      case EV.stTaken:
        this.streams.get(id)?.onTaken(x);
        return;
      case EV.stReset:
        this.streams.get(id)?.resetByPeer(a);
        return;
      case EV.frame:
        if (!this.closed) this.emit('frame', a, b, id, data ?? Buffer.alloc(0));
        return;
      case EV.open: {
        if (this.closed) return;
        const payload = data ?? Buffer.alloc(0);
        const stream = this.newStream(id);
        this.emit('stream', stream, {
          kind: payload[0] as number,
          address: payload.subarray(1),
        } satisfies OpenRequest);
        return;
      }
      case EV.openAck:
        this.streams.get(id)?.emit('open-ack', a);
        return;
      case EV.refused:
        this.emit('refused', id);
        return;
      case EV.goaway:
        if (this.goneAway) return;
        this.goneAway = true;
        this.emit('goaway', a, b);
        return;
      case EV.rtt:
        this.rttMs = x;
        this.emit('rtt', x);
        return;
      case EV.tlsDone:
        if (a !== 0 && data !== null && data.length >= 64) {
          const fp = data.subarray(32, 64);
          this.tls = {
            exporter: Buffer.from(data.subarray(0, 32)),
            fingerprint: fp.equals(ZERO32) ? '' : fp.toString('hex'),
            cipher: text ?? '',
          };
          this.emit('secure', this.tls);
        } else this.emit('tls-error', text ?? 'TLS handshake failed');
        return;
      case EV.fatal:
        metrics.tunnelProtocolErrors.labels(ERROR_NAMES[a] ?? String(a)).inc();
        if (!this.closed) this.emit('fatal', a, text ?? '');
        this.teardown();
        return;
      case EV.closed:
        this.engineClosed = true;
        this.teardown();
        this.release();
        return;
    }
  }

  // ---- ends -------------------------------------------------------------------------------------

  private newStream(id: number): NativeStream {
    const s = new NativeStream(id, this);
    this.streams.set(id, s);
    this.streamsOpened++;
    return s;
  }

  /** Closed for JavaScript: streams not attached to a socket end now (attached ones report). */
  private teardown(): void {
    if (this.closed) {
      if (this.engineClosed) this.release();
      return;
    }
    this.closed = true;
    for (const s of [...this.streams.values()]) {
      if (s.mode === 'fd' && !s.destroyed) continue;
      s.reset = true;
      s.abort(new ZiplineError('ZL_TUNNEL_CLOSED', 'tunnel session closed'));
    }
    this.emit('close');
    if (this.engineClosed) this.release();
  }

  /** The engine closed the connection: its record goes (counters read one last time). */
  private release(): void {
    if (this.released) return;
    this.refresh();
    this.released = true;
    // its frames reach the metric now: a session that ends between two scrapes is counted too
    this.flushFrameMetrics();
    // attached streams reported before EV.closed; any left (never attached) end here
    for (const s of [...this.streams.values()]) {
      s.reset = true;
      s.abort(new ZiplineError('ZL_TUNNEL_CLOSED', 'tunnel session closed'));
    }
    engine.b.command(C.release, this.sid, 0, 0, 0, 0, 0);
    engine.forget(this.sid);
  }
}
