/**
 * The rest of a large Content-Length response body, moved by the native splice pump
 * (native/pump/body.c) instead of through JavaScript. `start` succeeds only when it is safe:
 * nothing of the upstream socket is buffered in Node (we are in its read callback), libuv stops
 * reading it, and the client socket has nothing queued. When the job ends, the upstream socket
 * is read again (for its next response) and the outcome goes to `onSpliced`. Meanwhile the
 * connection refuses to resume its reads (`UpstreamConnection.handOff`).
 */
import type { ErrorCode } from '../errors.js';
import { type BodyClient, nativePump, PUMP_REASON, type PumpReason } from '../l4/native-pump.js';
import type { Downstream } from './downstream.js';
import type { ResponseReader } from './response-reader.js';
import type { UpstreamConnection } from './upstream-connection.js';

/** Bodies with at least this much left are worth a hand-off. */
export const SPLICE_MIN = 64 * 1024;

/** How long a cancelled job's report of what it delivered is waited for (then: 0 bytes). */
const REPORT_WAIT_MS = 1000;

export interface SpliceOwner {
  /** `error` is null when every byte was delivered; `bytes` is what the native thread moved. */
  onSpliced(error: ErrorCode | null, bytes: number): void;
}

export class SplicedBody implements BodyClient {
  private id: number | null = null;
  /** Set by `cancel`: where the bytes the job delivered go once the thread reports them. */
  private cancelled: ((bytes: number) => void) | null = null;
  private reportTimer: NodeJS.Timeout | null = null;
  /** Cancelled and reported (or given up on): a late report changes nothing. */
  private over = false;

  private constructor(
    private readonly upstream: UpstreamConnection,
    private readonly owner: SpliceOwner,
  ) {}

  /**
   * Starts a job for the rest of `reader`'s Content-Length body, from `upstream` to the client
   * behind `down` (the reader stops), or returns null: stay in JavaScript. A stall is bounded by
   * `idleMs` when the upstream sends nothing, by `clientIdleMs` when the client takes nothing.
   */
  static start(
    owner: SpliceOwner,
    upstream: UpstreamConnection,
    reader: ResponseReader,
    down: Downstream,
    idleMs: number,
    clientIdleMs: number,
  ): SplicedBody | null {
    const bytes = reader.remainingBody;
    if (bytes < SPLICE_MIN || upstream.socket.readableLength > 0) return null;
    const client = down.spliceTarget();
    if (client === null) return null;
    upstream.handOff();
    const body = new SplicedBody(upstream, owner);
    body.id = nativePump.body(body, upstream.socket, client, bytes, idleMs, clientIdleMs);
    if (body.id === null) {
      upstream.takeBack();
      return null;
    }
    reader.stop();
    return body;
  }

  /**
   * The exchange ended first: stop the job (it holds its own copies of the fds). `delivered` gets,
   * once, the bytes it had sent to the client, from the native thread in a later event-loop turn
   * (0 if it has not said within a second). False when there is no job (it ended already).
   */
  cancel(delivered: (bytes: number) => void): boolean {
    if (this.id === null) return false;
    this.cancelled = delivered;
    nativePump.bodyCancel(this.id);
    this.id = null;
    this.reportTimer = setTimeout(() => this.reported(0), REPORT_WAIT_MS);
    this.reportTimer.unref();
    return true;
  }

  private reported(bytes: number): void {
    const delivered = this.cancelled;
    this.cancelled = null;
    this.over = true;
    if (this.reportTimer !== null) clearTimeout(this.reportTimer);
    this.reportTimer = null;
    delivered?.(bytes);
  }

  /** @internal BodyClient */
  onBodyDone(reason: PumpReason, _errno: number, bytes: number): void {
    this.id = null;
    if (this.over) return;
    if (this.cancelled !== null) this.reported(bytes);
    else if (reason === PUMP_REASON.done) {
      this.upstream.takeBack();
      this.owner.onSpliced(null, bytes);
    } else if (reason === PUMP_REASON.errorB) this.owner.onSpliced('ZL_CLIENT_ABORTED', bytes);
    else if (reason === PUMP_REASON.idle) this.owner.onSpliced('ZL_UPSTREAM_IDLE_TIMEOUT', bytes);
    else if (reason === PUMP_REASON.clientIdle) this.owner.onSpliced('ZL_CLIENT_IDLE_TIMEOUT', bytes);
    else this.owner.onSpliced('ZL_UPSTREAM_PREMATURE_CLOSE', bytes);
  }
}
