/**
 * One proxied TCP connection: client ⇄ upstream, with backpressure, half-close, idle timeout,
 * reset propagation and a teardown that runs exactly once.
 *
 * States: `dialing` (client paused, upstream being connected) → `open` (bytes flow; either side
 * may half-close and the FIN is forwarded) → `closed` (both sockets closed; logged and counted).
 *
 * Two data paths, same behaviour: the native splice pump (Linux, when built; bytes never enter
 * JavaScript) or the JavaScript pump. In the JavaScript pump the data/drain/end handlers are
 * module-level functions shared by every connection; each socket carries its peer under a
 * symbol, so no closure is created per connection and nothing is allocated per chunk.
 */
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { ErrorCode } from '../errors.js';
import { buildProxyHeader, type ProxyAddress } from '../proxy-protocol/header.js';
import { clientAddressOf, localAddressOf } from '../proxy-protocol/reader.js';
import { Dial } from '../upstream/dial.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { Upstream } from '../upstream/upstream.js';
import { IDLE_UNREAD, nativePump, PUMP_REASON, type PumpClient, type PumpReason } from './native-pump.js';
import { endedByReset, resetSocket } from './reset-socket.js';
import type { TcpListener } from './tcp-listener.js';

const kPeer = Symbol('zipline.peer');
const kConn = Symbol('zipline.conn');

interface ProxySocket extends Socket {
  [kPeer]: ProxySocket | null;
  [kConn]: TcpConnection;
}

export type TcpConnectionState = 'dialing' | 'open' | 'closed';

export class TcpConnection implements PumpClient {
  state: TcpConnectionState = 'dialing';
  readonly client: ProxySocket;
  upstreamSocket: ProxySocket | null = null;
  endpoint: Endpoint | null = null;
  attempts = 0;
  /** First abnormal cause, or null for a clean close. */
  error: ErrorCode | null = null;
  readonly startedAt = Date.now();
  private openSockets = 1;
  /** Idle bookkeeping for the listener's coarse sweep (no per-chunk timer work). */
  lastActivity = -1;
  idleMs = 0;
  private dial: Dial | null = null;
  /** The native pump's id for this connection while it holds it, or null. */
  private pumpId: number | null = null;
  /** Which data path carried the bytes (for the access log). */
  dataPath: 'native' | 'js' | null = null;
  /** Bytes client→upstream and upstream→client counted by the native pump. */
  private nativeBytes: [number, number] = [0, 0];
  /** The client's address (a PROXY header's, when the listener takes them). */
  readonly peer: ProxyAddress;
  /** Client bytes read before the pump (a PROXY header and what came after it). */
  private readonly readBefore: number;

  /**
   * `early`: client bytes that came after a PROXY header in the same reads, sent to the server
   * first (null when there was no header).
   */
  constructor(
    readonly listener: TcpListener,
    client: Socket,
    private readonly upstream: Upstream,
    hash: number,
    private readonly early: Buffer | null = null,
  ) {
    this.peer = clientAddressOf(client);
    this.readBefore = client.bytesRead - client.readableLength;
    this.client = client as ProxySocket;
    this.client[kConn] = this;
    this.client[kPeer] = null;
    client.on('error', onSocketError);
    client.on('close', onSocketClose);
    this.dial = new Dial(upstream, hash, this);
    this.dial.start();
  }

  /**
   * Bytes moved so far, both sockets, both directions: changes iff there was traffic. Null while
   * the native pump holds the connection: it enforces the idle timeout itself.
   */
  activity(): number | null {
    if (this.pumpId !== null) return null;
    const c = this.client;
    const u = this.upstreamSocket;
    return c.bytesRead + c.bytesWritten + (u === null ? 0 : u.bytesRead + u.bytesWritten);
  }

  /** Bytes received from the client (a PROXY header not counted). */
  bytesIn(): number {
    const early = this.early?.length ?? 0;
    return this.dataPath === 'native'
      ? this.nativeBytes[0] + early
      : this.client.bytesRead - this.readBefore + early;
  }

  /** Bytes sent to the client. */
  bytesOut(): number {
    return this.dataPath === 'native' ? this.nativeBytes[1] : this.client.bytesWritten;
  }

  get clientIp(): string {
    return this.peer.ip;
  }

  /** Dial callback (`send_proxy`): the client and the address it connected to. */
  proxyHeader(version: 1 | 2): Buffer {
    return buildProxyHeader(version, this.peer, localAddressOf(this.client));
  }

  /** Dial callback: the upstream is connected; start pumping both ways. */
  onConnected(socket: Socket, endpoint: Endpoint, attempts: number): void {
    this.dial = null;
    this.endpoint = endpoint;
    this.attempts = attempts;
    const up = socket as ProxySocket;
    if (this.state !== 'dialing') {
      // the client left while we were connecting
      up.destroy();
      this.upstream.release(endpoint);
      return;
    }
    this.state = 'open';
    this.upstreamSocket = up;
    this.openSockets++;
    up[kConn] = this;
    up[kPeer] = this.client;
    this.client[kPeer] = up;
    up.on('error', onSocketError);
    up.on('close', onSocketClose);
    if (this.early !== null && this.early.length > 0) up.write(this.early);
    // TLS to the server: the bytes on its socket are records, so JavaScript pumps (and so it does
    // while anything written before, a PROXY header or the early bytes, is still queued, or
    // anything read from the client waits in its buffer)
    if (
      this.listener.settings.native &&
      !(up instanceof TLSSocket) &&
      up.writableLength === 0 &&
      this.client.readableLength === 0
    ) {
      // neither socket reads now (pauseOnConnect, the dial pauses the upstream), unless the
      // client's was read for its PROXY header: Node's stream reads ahead again the tick after,
      // even paused, and libuv and the pump must not both watch it
      const wasReading = readStop(this.client);
      this.pumpId = nativePump.add(this, this.client, up, this.listener.settings.idleTimeoutMs);
      if (this.pumpId !== null) {
        this.dataPath = 'native';
        return;
      }
      if (wasReading) readStart(this.client);
    }
    this.startJsPump(up);
  }

  private startJsPump(up: ProxySocket): void {
    this.dataPath = 'js';
    for (const s of [this.client, up]) {
      s.on('data', onData);
      s.on('drain', onDrain);
      s.on('end', onEnd);
    }
    this.client.resume();
    up.resume();
    // a client read for its PROXY header can have sent its FIN while the server was dialed: Node
    // emitted 'end' then (a paused stream still ends when its buffer is empty), so forward it now
    if (this.client.readableEnded) up.end();
  }

  /** Native pump callback: it has let go of both sockets; finish them the way it ended. */
  onPumpDone(reason: PumpReason, errno: number, toUpstream: number, toClient: number): void {
    this.pumpId = null;
    this.nativeBytes = [toUpstream, toClient];
    const up = this.upstreamSocket;
    if (up === null) return;
    switch (reason) {
      case PUMP_REASON.setup:
        // no byte was moved: carry on in JavaScript
        if (this.state === 'open') this.startJsPump(up);
        return;
      case PUMP_REASON.errorA:
        this.fail('ZL_CLIENT_RESET');
        up.resetAndDestroy();
        this.client.destroy();
        return;
      case PUMP_REASON.errorB:
        this.fail('ZL_UPSTREAM_RESET');
        this.client.resetAndDestroy();
        up.destroy();
        return;
      case PUMP_REASON.idle:
        this.fail('ZL_CLIENT_IDLE_TIMEOUT');
        // a side that left bytes unread is reset: the kernel drops them rather than keep them for it
        if ((errno & IDLE_UNREAD.a) !== 0) resetSocket(this.client);
        if ((errno & IDLE_UNREAD.b) !== 0) resetSocket(up);
        break;
      default:
        // done (both FINs forwarded) or cancel (destroy() recorded why)
        break;
    }
    this.client.destroy();
    up.destroy();
  }

  /** Dial callback: no upstream could be connected. */
  onFailed(code: ErrorCode, attempts: number, lastEndpoint: Endpoint | null): void {
    this.dial = null;
    this.attempts = attempts;
    this.endpoint = lastEndpoint;
    this.fail(code);
    this.client.destroy();
  }

  /** Records the first abnormal cause. */
  fail(code: ErrorCode): void {
    if (this.error === null) this.error = code;
  }

  /** Immediate teardown of both sides (drain timeout, idle timeout). */
  destroy(code: ErrorCode): void {
    this.fail(code);
    if (this.pumpId !== null) {
      // the pump must let go of the fds before they are closed: it answers with onPumpDone
      nativePump.cancel(this.pumpId);
      return;
    }
    this.dial?.cancel();
    if (code === 'ZL_CLIENT_IDLE_TIMEOUT') {
      // as the native pump: a side with bytes queued for it is not reading them, and is reset
      if (this.client.writableLength > 0) resetSocket(this.client);
      const up = this.upstreamSocket;
      if (up !== null && up.writableLength > 0) resetSocket(up);
    }
    this.client.destroy();
    this.upstreamSocket?.destroy();
  }

  onSocketClosed(socket: ProxySocket, hadError: boolean): void {
    this.openSockets--;
    if (this.state === 'dialing') {
      // client gone before the upstream was up: stop the dial, free what it holds
      this.state = 'closed';
      this.dial?.cancel();
      if (this.error === null && this.dial !== null) this.fail('ZL_CLIENT_RESET');
      this.dial = null;
      this.listener.onConnectionClosed(this);
      return;
    }
    const peer = socket[kPeer];
    // A clean close means both FINs were exchanged on this side, so the peer finishes by itself.
    // After an error or a destroy, the peer must go too.
    if (peer !== null && !peer.destroyed && (hadError || !socket.readableEnded || !socket.writableFinished)) {
      peer.destroy();
    }
    if (this.openSockets > 0) return;
    this.state = 'closed';
    if (this.endpoint !== null) this.upstream.release(this.endpoint);
    this.listener.onConnectionClosed(this);
  }
}

type ReadingHandle = { reading?: boolean; readStop?: () => number; readStart?: () => number };

function handleOf(socket: Socket): ReadingHandle | null {
  return (socket as unknown as { _handle?: ReadingHandle | null })._handle ?? null;
}

/** Stops libuv reading `socket`; true if it was reading (Node's own flag, as `pause()` sets it). */
function readStop(socket: Socket): boolean {
  const handle = handleOf(socket);
  if (handle?.reading !== true || handle.readStop === undefined) return false;
  handle.reading = false;
  handle.readStop();
  return true;
}

/** Undoes `readStop` (Node's stream still counts the read it had started as under way). */
function readStart(socket: Socket): void {
  const handle = handleOf(socket);
  if (handle === null || handle.readStart === undefined) return;
  handle.reading = true;
  handle.readStart();
}

function onData(this: ProxySocket, chunk: Buffer): void {
  const peer = this[kPeer];
  if (peer !== null && !peer.write(chunk)) this.pause();
}

function onDrain(this: ProxySocket): void {
  this[kPeer]?.resume();
}

function onEnd(this: ProxySocket): void {
  // an RST that came with the last bytes reaches Node as an end (reset-socket.ts): a reset
  if (endedByReset(this)) {
    abortPair(this, true);
    this.destroy();
    return;
  }
  // half-close: forward the FIN, keep the other direction open
  const peer = this[kPeer];
  if (peer !== null && !peer.destroyed) peer.end();
}

function onSocketError(this: ProxySocket, err: NodeJS.ErrnoException): void {
  abortPair(this, err.code === 'ECONNRESET' || err.code === 'EPIPE');
}

function abortPair(s: ProxySocket, reset: boolean): void {
  const conn = s[kConn];
  const fromClient = s === conn.client;
  conn.fail(fromClient ? 'ZL_CLIENT_RESET' : 'ZL_UPSTREAM_RESET');
  const peer = s[kPeer];
  // an abortive close on one side is propagated as an abortive close (RST) on the other
  // (a TLS socket: the TCP socket under it, when zipline has it: reset-socket.ts)
  if (peer !== null && !peer.destroyed) {
    if (reset) resetSocket(peer);
    else peer.destroy();
  }
}

function onSocketClose(this: ProxySocket, hadError: boolean): void {
  this[kConn].onSocketClosed(this, hadError);
}
