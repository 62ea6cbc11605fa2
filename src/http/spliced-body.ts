/**
 * The rest of a large Content-Length response body, moved by the native splice pump
 * (native/pump/body.c) instead of through JavaScript. `start` succeeds only when it is safe:
 * nothing of the upstream socket is buffered in Node (we are in its read callback), libuv stops
 * reading it, and the client socket has nothing queued. When the job ends, the upstream socket
 * is read again (for its next response) and the outcome goes to `onSpliced`.
 */
import type { Socket } from 'node:net';
import type { ErrorCode } from '../errors.js';
import { type BodyClient, nativePump, PUMP_REASON, type PumpReason } from '../l4/native-pump.js';

/** Bodies with at least this much left are worth a hand-off. */
export const SPLICE_MIN = 64 * 1024;

interface ReadHandle {
  readStop?(): number;
  readStart?(): number;
}

export interface SpliceOwner {
  /** `error` is null when every byte was delivered; `bytes` is what the native thread moved. */
  onSpliced(error: ErrorCode | null, bytes: number): void;
}

export class SplicedBody implements BodyClient {
  private id: number | null = null;

  private constructor(
    private readonly upstream: Socket,
    private readonly owner: SpliceOwner,
  ) {}

  /** Starts a job for `bytes` from `upstream` to `client`, or returns null (stay in JavaScript). */
  static start(
    owner: SpliceOwner,
    upstream: Socket,
    client: Socket,
    bytes: number,
    idleMs: number,
  ): SplicedBody | null {
    const handle = handleOf(upstream);
    if (bytes < SPLICE_MIN || upstream.readableLength > 0 || handle?.readStop === undefined) return null;
    handle.readStop();
    const body = new SplicedBody(upstream, owner);
    body.id = nativePump.body(body, upstream, client, bytes, idleMs);
    if (body.id === null) {
      handle.readStart?.();
      return null;
    }
    return body;
  }

  /** The exchange ended first: stop the job (it holds its own copies of the fds). */
  cancel(): void {
    if (this.id !== null) nativePump.bodyCancel(this.id);
    this.id = null;
  }

  /** @internal BodyClient */
  onBodyDone(reason: PumpReason, _errno: number, bytes: number): void {
    this.id = null;
    if (reason === PUMP_REASON.done) {
      handleOf(this.upstream)?.readStart?.();
      this.owner.onSpliced(null, bytes);
    } else if (reason === PUMP_REASON.errorB) this.owner.onSpliced('ZL_CLIENT_ABORTED', bytes);
    else if (reason === PUMP_REASON.idle) this.owner.onSpliced('ZL_UPSTREAM_IDLE_TIMEOUT', bytes);
    else this.owner.onSpliced('ZL_UPSTREAM_PREMATURE_CLOSE', bytes);
  }
}

/** libuv's stream handle behind a socket (internal but long-stable: readStart/readStop). */
function handleOf(s: Socket): ReadHandle | undefined {
  return (s as unknown as { _handle?: ReadHandle | null })._handle ?? undefined;
}
