/**
 * After `101 Switching Protocols` (WebSocket, h2c…): a raw two-way pump between the client and
 * the upstream socket with the L4 rules: backpressure both ways (a full side pauses the other's
 * reads), half-close passed on (FIN → `end()`), a reset or error on either side resets the other
 * (as the TCP proxy passes an RST on), and the connection counts as idle (for `client_idle`) when
 * no byte moved either way. Its end (`ended`, once) is the request's: the access line, the
 * duration and `requests_active` cover the whole session, as nginx logs a WebSocket at its close.
 */
import type { Socket } from 'node:net';
import type { ErrorCode } from '../errors.js';
import { endedByReset, resetSocket } from '../l4/reset-socket.js';
import { abortWrites, releaseWrites } from './write-batch.js';

/** The session ended: bytes the client sent after its request head, bytes it was sent after the 101 head, and why (null: both sides closed cleanly). */
export type UpgradeEnded = (bytesIn: number, bytesOut: number, code: ErrorCode | null) => void;

/** The upstream side: its socket, and where its reads go (upstream-connection.ts diverts them after a 101). */
export interface DivertedUpstream {
  readonly socket: Socket;
  divert: ((view: Buffer) => void) | null;
}

export class UpgradePump {
  private done = false;
  /** Bytes from the client on to the upstream (what it sent after its request head). */
  private bytesIn = 0;
  /** Bytes from the upstream on to the client (after the 101 head). */
  private bytesOut = 0;
  /** Idle tracking for `client_idle`: the byte count at `idleAt`. */
  private idleMark = 0;
  private idleAt = Date.now();

  private readonly upstream: Socket;

  constructor(
    private readonly client: Socket,
    diverted: DivertedUpstream,
    /** The 101 head for the client. */
    head: string,
    /** What the client sent after its request head. */
    early: Buffer | null,
    /** What the upstream sent after the 101's head (a view, valid during the call). */
    upstreamRest: Buffer,
    private readonly ended: UpgradeEnded,
  ) {
    const upstream = diverted.socket;
    this.upstream = upstream;
    // the client connection's own 'end' and 'drain' handlers give way to the pump's
    client.removeAllListeners('end');
    client.removeAllListeners('drain');
    // from here the pump writes to both sockets itself: what is held goes first
    releaseWrites(client);
    releaseWrites(upstream);
    client.write(head, 'latin1');
    // upstream bytes are views of the shared read buffer (upstream-connection.ts): copied
    if (upstreamRest.length > 0) this.fromUpstream(upstreamRest);
    if (early !== null && early.length > 0) {
      this.bytesIn += early.length;
      upstream.write(early);
    }
    // both ways the connections' reads are diverted here (`fromClient` by the client connection,
    // `fromUpstream`): views of shared read buffers, copied before they are written
    diverted.divert = (view) => this.fromUpstream(view);
    upstream.on('drain', () => client.resume());
    client.on('drain', () => upstream.resume());
    // FIN is passed on (an RST that came with the last bytes is an end in Node: a reset);
    // once both sides sent theirs the sockets close by themselves
    client.on('end', () => this.onEnd(client, upstream));
    upstream.on('end', () => this.onEnd(upstream, client));
    // a FIN the client sent with its request (`client_fin: finish`) came before the pump
    if (client.readableEnded) upstream.end();
    upstream.on('error', (err: NodeJS.ErrnoException) => this.failed(upstream, client, err));
    client.on('error', (err: NodeJS.ErrnoException) => this.failed(client, upstream, err));
    upstream.on('close', (hadError: boolean) => this.sideClosed(upstream, client, hadError));
    client.on('close', (hadError: boolean) => this.sideClosed(client, upstream, hadError));
    upstream.resume();
    client.resume();
  }

  fromClient(view: Buffer): void {
    this.bytesIn += view.length;
    if (!this.upstream.write(Buffer.from(view))) this.client.pause();
  }

  fromUpstream(view: Buffer): void {
    this.bytesOut += view.length;
    if (!this.client.write(Buffer.from(view))) this.upstream.pause();
  }

  /** From the listener's sweep: `client_idle` with no byte moved either way ends the session. */
  tick(now: number, clientIdleMs: number): void {
    const mark = this.bytesIn + this.bytesOut;
    if (mark !== this.idleMark) {
      this.idleMark = mark;
      this.idleAt = now;
    } else if (clientIdleMs > 0 && now - this.idleAt >= clientIdleMs && !this.done) {
      this.timeOut();
    }
  }

  /**
   * Idle: a side that leaves bytes queued in zipline is not reading (the other side is paused for
   * it), so it is reset and what waits for it dropped, as an HTTP response the client takes
   * nothing of; a FIN would leave them in the kernel for it.
   */
  private timeOut(): void {
    if (this.client.writableLength > 0) abortWrites(this.client, true);
    if (this.upstream.writableLength > 0) abortWrites(this.upstream, true);
    this.destroy('ZL_CLIENT_IDLE_TIMEOUT');
  }

  /** Both sides closed now (once); `code` says why, null when the sides closed by themselves. */
  destroy(code: ErrorCode | null): void {
    if (this.done) return;
    this.done = true;
    this.client.destroy();
    this.upstream.destroy();
    this.ended(this.bytesIn, this.bytesOut, code);
  }

  /**
   * One side closed. Cleanly (both FINs passed on that side): the other finishes by itself, what
   * it still holds for its peer delivered first (bounded by `client_idle`); else both go now.
   */
  private sideClosed(side: Socket, other: Socket, hadError: boolean): void {
    if (!hadError && side.readableEnded && side.writableFinished && !other.closed) return;
    this.destroy(null);
  }

  private onEnd(from: Socket, to: Socket): void {
    if (endedByReset(from)) this.reset(from, to);
    else if (!to.destroyed) to.end();
  }

  /** An error on `from`: a reset is passed on as a reset (as the TCP proxy does), any other closes. */
  private failed(from: Socket, to: Socket, err: NodeJS.ErrnoException): void {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE') this.reset(from, to);
    else this.close(from);
  }

  /** `from` was reset: the other side is reset too, dropping what waits for it. */
  private reset(from: Socket, to: Socket): void {
    if (this.done) return;
    resetSocket(to);
    this.close(from);
  }

  private close(from: Socket): void {
    this.destroy(from === this.client ? 'ZL_CLIENT_RESET' : 'ZL_UPSTREAM_RESET');
  }
}
