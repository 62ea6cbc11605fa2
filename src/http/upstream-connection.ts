/**
 * One HTTP/1.1 connection to an upstream server. It belongs to a pool: idle (kept for reuse) or
 * serving one exchange at a time. Its socket events go to the exchange that owns it; while idle,
 * the socket is still read so that a server closing it is noticed at once (and unexpected bytes
 * retire it).
 *
 * Upstream sockets are read into one shared buffer (`onread`), not into a fresh 64 KiB
 * ArrayBuffer per read as Node's default does: V8 counts every such buffer against the old
 * generation's limit, and at 1 MiB bodies they started a full mark-compact every ~100 ms (a fifth
 * of the proxy's CPU, measured with `--trace-gc`). So a view handed to `onRead` (and on to the
 * owner) is valid only until the callback returns: whoever keeps bytes copies them
 * (docs/dev/HTTP-DATA-PATH.md).
 */
import { connect, type Socket } from 'node:net';
import { connect as connectTls, TLSSocket } from 'node:tls';
import { type ErrorCode, upstreamConnectCode } from '../errors.js';
import { endedByReset } from '../l4/reset-socket.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { OriginTls } from '../upstream/origin-tls.js';
import { prepareWrites } from './write-batch.js';

/** What an exchange must handle while it owns a connection. */
export interface UpstreamOwner {
  onUpstreamData(conn: UpstreamConnection, chunk: Buffer): void;
  onUpstreamEnd(conn: UpstreamConnection): void;
  onUpstreamClose(conn: UpstreamConnection, code: ErrorCode): void;
  onUpstreamDrain(conn: UpstreamConnection): void;
}

export interface ConnectionHome {
  /** The connection closed (for any reason); forget it. */
  forget(conn: UpstreamConnection): void;
  /** Its TLS failed after the handshake (a server's alert): the reason is worth a log line. */
  tlsFailed(conn: UpstreamConnection, err: NodeJS.ErrnoException): void;
}

/** Every upstream socket reads into this; safe because reads are consumed synchronously. */
const READ_SCRATCH = Buffer.allocUnsafeSlow(16 * 1024);

/**
 * Opens a socket to `e` whose reads go to the connection made for it (`opened.conn`, set on
 * 'connect'; nothing can be read before). With `tls` the socket is a TLSSocket, ready at
 * 'secureConnect'; its reads are decrypted chunks ('data'), as Node gives no `onread` for TLS.
 */
export function connectUpstream(
  e: Endpoint,
  opened: { conn: UpstreamConnection | null },
  tls: OriginTls | null,
): Socket {
  if (tls !== null) {
    const socket = connectTls(tls.connectOptions(e));
    prepareWrites(socket);
    socket.setNoDelay(true);
    socket.on('session', (session: Buffer) => tls.remember(e, session));
    socket.on('data', (chunk: Buffer) => {
      const conn = opened.conn;
      if (conn === null) socket.destroy();
      else conn.onRead(chunk);
    });
    return socket;
  }
  const socket: Socket = connect({
    host: e.ip,
    port: e.port,
    noDelay: true,
    onread: {
      buffer: READ_SCRATCH,
      callback: (n: number, buf: Uint8Array): boolean => {
        const conn = opened.conn;
        if (conn === null) {
          socket.destroy();
          return false;
        }
        conn.onRead((buf as Buffer).subarray(0, n));
        return true;
      },
    },
  });
  prepareWrites(socket);
  return socket;
}

export class UpstreamConnection {
  owner: UpstreamOwner | null = null;
  /** Requests started on this connection. */
  requests = 0;
  idleSince = 0;
  closed = false;
  private errorCode: ErrorCode | null = null;

  constructor(
    readonly socket: Socket,
    readonly endpoint: Endpoint,
    private readonly home: ConnectionHome,
  ) {
    socket.on('end', () => {
      // an RST that came with the last bytes reaches Node as an end (reset-socket.ts): a
      // close-delimited body it cut short must not look complete (an idle pooled connection's
      // end, the common one, needs no asking: it is closed either way)
      if (this.owner !== null && this.errorCode === null && endedByReset(socket))
        this.errorCode = 'ZL_UPSTREAM_RESET';
      // an end after an error (a TLS alert) closes with that error's code, not as a clean end
      if (this.owner !== null && this.errorCode === null) this.owner.onUpstreamEnd(this);
      else socket.destroy();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.errorCode = err.code === 'ETIMEDOUT' ? 'ZL_UPSTREAM_IDLE_TIMEOUT' : resetCode(err, this.encrypted);
      if (this.errorCode === 'ZL_UPSTREAM_TLS') this.home.tlsFailed(this, err);
    });
    socket.on('close', () => {
      this.closed = true;
      this.home.forget(this);
      const owner = this.owner;
      this.owner = null;
      owner?.onUpstreamClose(this, this.errorCode ?? 'ZL_UPSTREAM_PREMATURE_CLOSE');
    });
    socket.on('drain', () => this.owner?.onUpstreamDrain(this));
  }

  /** TLS to the server: no native splice (the bytes on the socket are not the body's). */
  get encrypted(): boolean {
    return this.socket instanceof TLSSocket;
  }

  /** A spliced body: the native thread reads this socket and JavaScript must not. */
  private nativeReads = false;

  /** Backpressure: stop reading (at once: `onread` sockets stop libuv synchronously). */
  pauseReads(): void {
    this.socket.pause();
  }

  /**
   * Read again, unless the native thread owns the reads. Only a paused socket is resumed: every
   * exchange's end asks, and Node's `resume` on a socket that is reading is no cheap no-op (its
   * checks are megamorphic property loads).
   */
  resumeReads(): void {
    if (!this.nativeReads && this.socket.isPaused()) this.socket.resume();
  }

  /** The native thread takes the reads (spliced-body.ts); `takeBack` when its job ended. */
  handOff(): void {
    this.nativeReads = true;
    this.socket.pause();
  }

  takeBack(): void {
    this.nativeReads = false;
    this.socket.resume();
  }

  /** After a 101 the upgrade pump takes the reads. */
  divert: ((view: Buffer) => void) | null = null;

  /** Bytes read from the server: a view of the shared read buffer, valid during this call. */
  onRead(view: Buffer): void {
    // bytes while the native thread owns the reads cannot happen (libuv was stopped)
    if (this.nativeReads) this.socket.destroy();
    else if (this.divert !== null) this.divert(view);
    else if (this.owner !== null) this.owner.onUpstreamData(this, view);
    else this.socket.destroy(); // bytes nobody asked for: the connection is out of step
  }

  /** A connection that has served a request before: its first failure may be the stale race. */
  get reused(): boolean {
    return this.requests > 1;
  }

  destroy(): void {
    this.owner = null;
    this.socket.destroy();
  }
}

/**
 * `encrypted`: TLS errors are `ZL_UPSTREAM_TLS`, e.g. a TLS 1.3 server's alert that it wanted a
 * client certificate, which comes after the client's handshake has finished.
 */
function resetCode(err: NodeJS.ErrnoException, encrypted: boolean): ErrorCode {
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE') return 'ZL_UPSTREAM_RESET';
  return upstreamConnectCode(err, encrypted);
}
