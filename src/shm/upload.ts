/**
 * Request bodies of `/shm` POSTs (snapshots and messages to C), read whole before they are
 * written to the segment, within one bound per bridge: `shm[].upload_buffer` bytes held by the
 * bodies being received at once (at least the snapshot capacity, so one full snapshot always fits).
 * Without it, concurrent uploads to a 256 MiB bridge could hold any multiple of 256 MiB.
 *
 * A `Content-Length` body reserves its length before anything is read and is read into one buffer
 * of that size; a chunked one reserves each chunk as it arrives. Over the bound: 503
 * `ZL_SHM_BUSY` (+ `Retry-After`), as when the lock is busy. Over the limit of what it is for
 * (capacity, slot): 413 `ZL_SHM_TOO_LARGE`. Either way, a chunked body's rest is read and dropped
 * for up to `LINGERING_TIMEOUT_MS`, as nginx's lingering close: closing at once, with the client still
 * sending, would reset the connection and the client would lose the answer before reading it (a
 * `Content-Length` one is refused before it is read, and node:http drops its rest).
 */
import type { IncomingMessage } from 'node:http';
import { ZiplineError } from '../errors.js';
import { LINGERING_TIMEOUT_MS } from '../l4/lingering-close.js';

/** Bytes held by the bodies being received for one bridge. */
export class UploadBudget {
  private held = 0;

  constructor(readonly limit: number) {}

  get inUse(): number {
    return this.held;
  }

  /** Reserves `n` bytes; false when that would pass the limit. */
  take(n: number): boolean {
    if (this.held + n > this.limit) return false;
    this.held += n;
    return true;
  }

  give(n: number): void {
    this.held -= n;
  }
}

/** A body read whole, holding `size` bytes of its budget until `release()`. */
export interface Upload {
  readonly data: Buffer;
  release(): void;
}

function busy(budget: UploadBudget): ZiplineError {
  return new ZiplineError(
    'ZL_SHM_BUSY',
    `uploads being received by this bridge already hold ${budget.inUse} of their ${budget.limit} bytes (shm[].upload_buffer); retry`,
  );
}

/** Reads `req`'s body (at most `limit` bytes) within `budget`. */
export function readUpload(req: IncomingMessage, limit: number, budget: UploadBudget): Promise<Upload> {
  const header = req.headers['content-length'];
  const declared = header === undefined ? -1 : Number(header);
  if (declared > limit)
    return Promise.reject(new ZiplineError('ZL_SHM_TOO_LARGE', `body over ${limit} bytes`));
  if (declared >= 0 && !budget.take(declared)) return Promise.reject(busy(budget));
  return new Promise((resolve, reject) => {
    // Content-Length: one buffer of that size (node:http delivers exactly that many bytes)
    const whole = declared >= 0 ? Buffer.allocUnsafe(declared) : null;
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const giveBack = (): void => {
      if (settled) return;
      settled = true;
      budget.give(whole === null ? size : declared);
    };
    const refuse = (err: ZiplineError): void => {
      giveBack();
      chunks.length = 0;
      req.off('data', collect);
      req.on('data', () => {}); // dropped
      const linger = setTimeout(() => req.socket.destroy(), LINGERING_TIMEOUT_MS);
      linger.unref();
      req.once('close', () => clearTimeout(linger));
      reject(err);
    };
    const collect = (c: Buffer): void => {
      if (whole !== null) {
        c.copy(whole, size);
        size += c.length;
        return;
      }
      const refused =
        size + c.length > limit
          ? new ZiplineError('ZL_SHM_TOO_LARGE', `body over ${limit} bytes`)
          : budget.take(c.length)
            ? null
            : busy(budget);
      if (refused !== null) {
        refuse(refused);
        return;
      }
      size += c.length;
      chunks.push(c);
    };
    req.on('data', collect);
    req.on('end', () => {
      if (settled) return;
      resolve({ data: whole ?? Buffer.concat(chunks, size), release: giveBack });
    });
    // aborted before the end: the reservation goes back at once. node:http errors a request only
    // when its connection fails before the body's end ('aborted', ECONNRESET): the same client
    // going away, not a fault of zipline's
    const aborted = (): void => {
      giveBack();
      reject(new ZiplineError('ZL_CLIENT_ABORTED', 'the client went away before the end of the body'));
    };
    req.on('close', () => {
      if (!req.complete) aborted();
    });
    req.on('error', aborted);
  });
}
