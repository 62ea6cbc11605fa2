/**
 * One proxied HTTP request: route → upstream attempt(s) → response streamed back.
 *
 * Attempts: pick an endpoint (`Upstream.pick`), take a pooled connection or open one, write the
 * forwarded head and whatever body is at hand, then stream the rest of the body both ways with
 * backpressure (a full socket pauses its source). An attempt that fails before any response
 * byte reached the client may be retried (see `mayRetry`): a server not yet tried goes at once,
 * once every server was tried a full-jitter backoff comes first, and the retry budget of the
 * upstream caps retries in flight. A request that failed on a *reused* connection before any
 * response byte, or got a 408 there (the keep-alive race: the server closed it as we sent), is
 * replayed once on a fresh connection to the same server, not as an attempt, when replayable.
 *
 * Exactly one of three ends: `complete()` (response done), `fail(code)` (error response, or abort
 * once the head was sent), `clientGone()` (499). Each gives back the connection (to the pool only
 * when it is clean) and what it holds on the upstream (`UpstreamAccount`), once.
 */
import { nowMs } from '../core/clock.js';
import type { ErrorCode } from '../errors.js';
import type { Endpoint } from '../upstream/endpoint.js';
import { ExchangeBase } from './exchange-base.js';
import { headFor } from './forward-head.js';
import { buildSwitchingHead } from './forward-response.js';
import type { ResponseHead } from './parser/response-head.js';
import { RequestBody } from './request-body.js';
import { type ResponseEvents, ResponseReader } from './response-reader.js';
import type { FailureKind } from './retry-policy.js';
import { SplicedBody, type SpliceOwner } from './spliced-body.js';
import type { UpgradeEnded } from './upgrade-pump.js';
import type { UpstreamConnection, UpstreamOwner } from './upstream-connection.js';
import { writeText } from './write-batch.js';

/** Response bodies up to this size that arrived with their head go out in the head's write. */
const INLINE_BODY_MAX = 8 * 1024;

export class Exchange extends ExchangeBase implements UpstreamOwner, ResponseEvents, SpliceOwner {
  private conn: UpstreamConnection | null = null;
  private staleRetried = false;
  private readonly body = new RequestBody(
    this.host.maxBodyReplay,
    this.head.contentLength <= 0 && !this.head.chunked,
  );
  private sentContinue = false;
  private reader: ResponseReader | null = null;
  private dirty = false;
  /** The native job carrying the rest of the response body, if any. */
  private spliced: SplicedBody | null = null;
  /**
   * The end (metrics, access line) waits: for a cancelled native body job to say what it
   * delivered, or for an upgraded session to close.
   */
  private endDeferred = false;
  /** Bytes the client sent through an upgraded session. */
  private upgradeBytesIn = 0;
  /** Response body bytes that went through the native splice pump. */
  splicedBytes = 0;

  /** Request body bytes received from the client. */
  get bodyBytes(): number {
    return this.body.bytes + this.upgradeBytesIn;
  }

  /** The request body was fully received. */
  get bodyDone(): boolean {
    return this.body.done;
  }

  onPicked(e: Endpoint): void {
    this.connectTo(e, false);
  }

  /** `fresh`: the keep-alive race's replay, on a new connection (not an attempt, not a retry). */
  private connectTo(e: Endpoint, fresh: boolean): void {
    this.account.acquire(e, fresh);
    this.state = 'connecting';
    const cancel = this.pool.connection(e, fresh, (conn, code) => this.onConnection(conn, code));
    if (this.state === 'connecting' && this.conn === null) this.cancelConnect = cancel;
  }

  private onConnection(conn: UpstreamConnection | null, code: ErrorCode | null): void {
    this.cancelConnect = null;
    if (this.state !== 'connecting') {
      conn?.destroy();
      return;
    }
    if (conn === null) {
      this.connectFailed(code);
      return;
    }
    this.conn = conn;
    conn.owner = this;
    this.reader = new ResponseReader(this.head.method, this.down.passesChunked, this);
    this.dirty = false;
    this.state = 'waiting';
    const socket = conn.socket;
    // the head and what is buffered of the body in one write, at the end of this turn
    writeText(socket, headFor(this.forward, this.endpoint?.server), this.host.directWrites);
    const ok = this.body.sendTo(socket);
    if (this.body.done) this.clock.requestSentAt = nowMs();
    else if (this.head.expectContinue && !this.sentContinue) {
      this.sentContinue = true;
      this.down.sendContinue();
    }
    this.upstreamTakes(ok);
  }

  /**
   * An attempt failed before the client got anything. `stale`: it ran on a reused connection
   * that died before any response byte (the keep-alive race), which is not the server's fault.
   */
  protected attemptFailed(code: ErrorCode, kind: FailureKind, stale = false): void {
    const e = this.endpoint;
    this.dropConnection();
    if (stale && !this.staleRetried && this.replayable() && e !== null) {
      this.lastCode = code;
      this.staleRetried = true;
      this.account.release();
      this.connectTo(e, true); // not an attempt of the retry policy, nor a retry
      return;
    }
    this.retryOrFail(code, kind);
  }

  protected bodyIsLost(): boolean {
    return this.body.lost;
  }

  /** Request body bytes as framed for the upstream (Content-Length bytes, or chunked coding). */
  bodyChunk(chunk: Buffer): void {
    if (this.state === 'done') return;
    if (!this.body.add(chunk, this.conn?.socket ?? null)) this.upstreamTakes(false);
  }

  bodyEnd(): void {
    this.body.done = true;
    if (this.conn !== null && this.state === 'waiting') this.clock.requestSentAt = nowMs();
  }

  onUpstreamData(conn: UpstreamConnection, chunk: Buffer): void {
    if (conn === this.conn && (this.state === 'waiting' || this.state === 'streaming')) {
      this.reader?.feed(chunk);
    }
  }

  onUpstreamEnd(conn: UpstreamConnection): void {
    if (conn !== this.conn) return;
    if (this.state === 'streaming' && this.reader?.closeDelimited === true) {
      this.complete();
      return;
    }
    this.upstreamGone(conn, 'ZL_UPSTREAM_PREMATURE_CLOSE');
  }

  onUpstreamClose(conn: UpstreamConnection, code: ErrorCode): void {
    if (conn !== this.conn) return;
    this.conn = null;
    this.upstreamGone(conn, code);
  }

  onUpstreamDrain(conn: UpstreamConnection): void {
    if (conn === this.conn) this.upstreamTakes(true);
  }

  /** The client can take more response bytes. */
  onClientDrain(): void {
    this.clientTakes(true);
    this.conn?.resumeReads();
  }

  private upstreamGone(conn: UpstreamConnection, code: ErrorCode): void {
    if (this.state === 'waiting') {
      if (this.reader?.bytes === 0) {
        const kind: FailureKind = code === 'ZL_UPSTREAM_IDLE_TIMEOUT' ? 'timeout' : 'reset';
        this.attemptFailed(code, kind, conn.reused);
      } else {
        this.badResponse(); // a partial head: never retried
      }
      return;
    }
    if (this.state === 'streaming')
      this.fail(code === 'ZL_UPSTREAM_RESET' ? code : 'ZL_UPSTREAM_PREMATURE_CLOSE');
  }

  onInterim(resp: ResponseHead): void {
    if (resp.status !== 100 || !this.sentContinue) this.down.sendInterim(resp);
  }

  onSwitching(resp: ResponseHead, rest: Buffer): void {
    if (this.head.upgrade === null) this.badResponse();
    else this.switchProtocols(resp, rest);
  }

  onMalformed(): void {
    if (this.state === 'waiting') this.badResponse();
    else this.fail('ZL_UPSTREAM_BAD_RESPONSE');
  }

  onHeadOut(resp: ResponseHead): void {
    this.sendHeadToClient(resp, null);
  }

  onBody(chunk: Buffer): void {
    if (this.state !== 'streaming') return; // the head was refused (502 instead)
    this.bytesOut += chunk.length;
    if (!this.down.write(chunk)) {
      this.clientTakes(false);
      this.conn?.pauseReads();
    }
  }

  onComplete(extra: boolean): void {
    if (this.state !== 'streaming') return;
    this.dirty = extra;
    this.complete();
  }

  private badResponse(): void {
    this.account.judge(false, nowMs());
    this.dropConnection();
    this.fail('ZL_UPSTREAM_BAD_RESPONSE');
  }

  onFinalHead(resp: ResponseHead, buf: Buffer, end: number): void {
    // a 408 on a reused connection is the keep-alive race too (RFC 9110 §15.5.9)
    if (resp.status === 408 && this.conn?.reused === true && !this.staleRetried && this.replayable()) {
      this.attemptFailed('ZL_UPSTREAM_RESET', 'reset', true);
      return;
    }
    if (this.retriedStatus(resp)) return;
    this.status = resp.status;
    this.state = 'streaming';
    const len = resp.contentLength;
    if (resp.body === 'length' && len > 0 && len <= INLINE_BODY_MAX && buf.length - end >= len) {
      // the common small response: head and body in one write
      if (!this.sendHeadToClient(resp, buf.subarray(end, end + len))) return;
      this.bytesOut += len;
      this.dirty = end + len < buf.length;
      this.complete();
      return;
    }
    (this.reader as ResponseReader).startBody(resp, buf, end);
    // large Content-Length bodies: the rest goes through the native splice pump when it can
    if (this.state === 'streaming' && this.host.spliceBodies && this.conn !== null && !this.conn.encrypted) {
      const idle = this.route.idleTimeoutMs ?? this.upstream.settings.idleTimeoutMs;
      const reader = this.reader as ResponseReader;
      const clientIdle = this.host.settings.clientIdleMs;
      this.spliced = SplicedBody.start(this, this.conn, reader, this.down, idle, clientIdle);
    }
  }

  /** @internal the native body job ended (SpliceOwner). */
  onSpliced(error: ErrorCode | null, bytes: number): void {
    this.spliced = null;
    if (this.state !== 'streaming') return;
    this.bytesOut += bytes;
    this.splicedBytes = bytes;
    if (error === null) this.complete();
    else this.fail(error);
  }

  private switchProtocols(resp: ResponseHead, rest: Buffer): void {
    const conn = this.conn as UpstreamConnection;
    this.conn = null;
    conn.owner = null;
    const socket = conn.socket;
    // the pump takes over: reads arrive through `divert`, the rest it wires itself
    for (const ev of ['end', 'drain', 'close', 'error']) socket.removeAllListeners(ev);
    this.pool.forget(conn);
    this.account.judge(true, nowMs());
    this.status = 101;
    this.headSent = true;
    this.state = 'done';
    this.account.release();
    this.endDeferred = true; // the session's end is the request's (upgradeEnded)
    this.finished();
    const head = buildSwitchingHead(resp, this.route.response);
    const ended: UpgradeEnded = (i, o, code) => this.upgradeEnded(i, o, code);
    if (!this.down.upgrade(this, conn, head, rest, ended)) {
      socket.destroy();
      this.upgradeEnded(0, 0, 'ZL_CLIENT_ABORTED');
    }
  }

  /** The upgraded session closed: bytes each way after the heads, and why (null: cleanly). */
  private upgradeEnded(bytesIn: number, bytesOut: number, code: ErrorCode | null): void {
    this.endDeferred = false;
    this.upgradeBytesIn = bytesIn;
    this.bytesOut = bytesOut;
    this.code = code;
    this.host.onExchangeEnd(this);
  }

  private complete(): void {
    this.state = 'done';
    const conn = this.conn;
    this.conn = null;
    if (conn !== null) {
      const resp = this.reader?.resp;
      conn.resumeReads(); // it may have been paused for backpressure
      if (resp?.keepAlive === true && this.body.done && !this.dirty && !conn.closed) this.pool.release(conn);
      else conn.destroy();
    }
    this.account.release();
    this.finished();
    this.down.finish(this);
  }

  /** Timeouts, called by the listener's sweep with the current time. */
  tick(now: number, clientIdleMs: number): void {
    // a spliced body is timed by the native thread
    if (this.state !== 'waiting' && (this.state !== 'streaming' || this.spliced !== null)) return;
    const mark = (this.reader?.bytes ?? 0) + this.body.bytes + this.bytesOut;
    this.checkDeadlines(this.state, mark, now, clientIdleMs);
  }

  protected dropAttempt(): void {
    this.endDeferred = this.spliced?.cancel((bytes) => this.splicedUntil(bytes)) === true;
    this.spliced = null;
    this.dropConnection();
  }

  private dropConnection(): void {
    const conn = this.conn;
    this.conn = null;
    if (conn !== null) conn.destroy();
  }

  protected finished(): void {
    // it can end before it started (a malformed body read with its head): close() gives back what was taken
    this.account.close();
    this.body.release();
    if (!this.endDeferred) this.host.onExchangeEnd(this);
  }

  /** A cancelled body job delivered `bytes` (0: it did not say in time); the exchange ends now. */
  private splicedUntil(bytes: number): void {
    this.endDeferred = false;
    this.bytesOut += bytes;
    this.splicedBytes = bytes;
    this.host.onExchangeEnd(this);
  }
}
