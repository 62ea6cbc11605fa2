/**
 * A request body on its way upstream: chunks (as framed for the upstream: Content-Length bytes
 * or chunked coding) are written to the current upstream connection as they come, and kept while
 * the body is at most `limit` bytes (`limits.max_body_replay`) so that a retry can send them
 * again. Past the limit, held chunks are dropped once written; the request is then no longer
 * replayable (`lost`). Before a connection exists, chunks are held (the client is paused once
 * past the limit, so this stays bounded).
 */
import type { Socket } from 'node:net';
import { writeBytes } from './write-batch.js';

export class RequestBody {
  /** Body bytes received from the client. */
  bytes = 0;
  /** The whole body was received. */
  done: boolean;
  /** Bytes were sent upstream and not kept: the body cannot be sent again. */
  lost = false;
  private chunks: Buffer[] = [];
  private replayable = true;

  constructor(
    private readonly limit: number,
    done: boolean,
  ) {
    this.done = done;
  }

  /** A chunk from the client; written at once when connected. False: pause the client. */
  add(chunk: Buffer, socket: Socket | null): boolean {
    this.bytes += chunk.length;
    if (this.replayable && this.bytes > this.limit) this.replayable = false;
    if (socket === null) {
      this.chunks.push(chunk);
      return this.replayable;
    }
    if (this.replayable) this.chunks.push(chunk);
    else {
      this.chunks = [];
      this.lost = true;
    }
    return writeBytes(socket, chunk);
  }

  /** Writes what is held to a fresh connection (after its head). False: pause the client. */
  sendTo(socket: Socket): boolean {
    let ok = true;
    for (const chunk of this.chunks) ok = writeBytes(socket, chunk);
    if (!this.replayable) {
      if (this.chunks.length > 0) this.lost = true;
      this.chunks = [];
    }
    return ok;
  }

  release(): void {
    this.chunks = [];
  }
}
