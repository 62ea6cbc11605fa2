/**
 * Plain-HTTP client sockets read into one shared buffer (`onread`), whoever accepted them (the
 * native thread or libuv, listener.ts): no fresh ArrayBuffer, Readable `push` or `nextTick` per
 * read. The buffer is consumed synchronously by the connection's `onBytes`, so one serves every
 * such socket; what a connection keeps past the call it copies (client-connection.ts).
 */
import type { Socket } from 'node:net';

/** What takes a shared-buffer socket's bytes (a ClientConnection). */
export interface ReadTarget {
  /** `view` is valid only during the call. */
  onBytes(view: Buffer): void;
}

/**
 * Where a shared-buffer socket's reads go: set before the first read can arrive (reads are
 * delivered by libuv after the accept callback returns).
 */
export interface ClientReads {
  conn: ReadTarget | null;
}

/** Every plain client socket reads into this (consumed synchronously). */
const READ_SCRATCH = Buffer.allocUnsafeSlow(16 * 1024);

/** The `onread` option for a plain-HTTP client socket whose reads go to `route.conn`. */
export function sharedReads(
  route: ClientReads,
  socket: () => Socket | null,
): { buffer: Buffer; callback: (n: number, buf: Uint8Array) => boolean } {
  return {
    buffer: READ_SCRATCH,
    callback: (n, buf) => {
      const conn = route.conn;
      if (conn === null) {
        socket()?.destroy();
        return false;
      }
      conn.onBytes((buf as Buffer).subarray(0, n));
      return true;
    },
  };
}
