/**
 * One HTTP/1.1 connection to an upstream server. It belongs to a pool: idle (kept for reuse) or
 * serving one exchange at a time. Its socket events go to the exchange that owns it; while idle,
 * the socket is still read so that a server closing it is noticed at once (and unexpected bytes
 * retire it).
 *
 * (Reading into one shared buffer with `onread` was measured: no gain at 2-byte bodies, and the
 * copies it forces cost ~10 % at 1 MiB bodies. Node allocates per read; we keep what it gives.)
 */
import type { Socket } from 'node:net';
import { type ErrorCode, upstreamConnectCode } from '../errors.js';
import type { Endpoint } from '../upstream/endpoint.js';

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
    socket.on('data', (chunk: Buffer) => this.onRead(chunk));
    socket.on('end', () => {
      if (this.owner !== null) this.owner.onUpstreamEnd(this);
      else socket.destroy();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.errorCode = err.code === 'ETIMEDOUT' ? 'ZL_UPSTREAM_IDLE_TIMEOUT' : resetCode(err);
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

  /** After a 101 the upgrade pump takes the reads. */
  divert: ((view: Buffer) => void) | null = null;

  /** Bytes read from the server. */
  onRead(view: Buffer): void {
    if (this.divert !== null) this.divert(view);
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

function resetCode(err: NodeJS.ErrnoException): ErrorCode {
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE') return 'ZL_UPSTREAM_RESET';
  return upstreamConnectCode(err);
}
