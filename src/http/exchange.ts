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
import { hash32 } from '../balancer/hash-fn.js';
import { nowMs } from '../core/clock.js';
import { ERROR_CATALOG, type ErrorCode } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { Upstream } from '../upstream/upstream.js';
import type { Downstream } from './downstream.js';
import type { ExchangeHost } from './exchange-host.js';
import { buildForwardHead, type ForwardedHead, headFor } from './forward-head.js';
import { buildSwitchingHead } from './forward-response.js';
import type { RequestHead } from './parser/request-head.js';
import type { ResponseHead } from './parser/response-head.js';
import { type HttpPool, poolOf } from './pool.js';
import { requestClientIp } from './real-ip.js';
import { RequestBody } from './request-body.js';
import { type ResponseEvents, ResponseReader } from './response-reader.js';
import {
  codeForStatus,
  type FailureKind,
  honourRetryAfter,
  mayRetry,
  requestHash,
  safeToRepeat,
} from './retry-policy.js';
import type { RouteMatch } from './route-table.js';
import { type PickOwner, ServerPicker } from './server-picker.js';
import type { CompiledRoute } from './settings.js';
import { SplicedBody, type SpliceOwner } from './spliced-body.js';
import { StallClock } from './stall-clock.js';
import { UpstreamAccount } from './upstream-account.js';
import type { UpstreamConnection, UpstreamOwner } from './upstream-connection.js';
import { writeText } from './write-batch.js';

/** Response bodies up to this size that arrived with their head go out in the head's write. */
const INLINE_BODY_MAX = 8 * 1024;

export type ExchangeState =
  | 'picking'
  | 'queued'
  | 'backoff'
  | 'connecting'
  | 'waiting'
  | 'streaming'
  | 'done';

export class Exchange implements UpstreamOwner, ResponseEvents, SpliceOwner, PickOwner {
  state: ExchangeState = 'picking';
  readonly startedAt = performance.now();
  readonly requestId: string;
  /** The error that ended it, if any. */
  code: ErrorCode | null = null;
  /** Status sent (or to be sent) to the client; 0 until known. */
  status = 0;
  /** The request's client: the connection's, or the one `real_ip_header` names (real-ip.ts). */
  readonly clientIp: string;
  /** Response body bytes sent to the client. */
  bytesOut = 0;
  /** The client has the response head: no retry, and failures abort the client. */
  headSent = false;
  private readonly forward: ForwardedHead;
  private readonly pool: HttpPool;
  private conn: UpstreamConnection | null = null;
  private cancelConnect: (() => void) | null = null;
  private readonly picker: ServerPicker;
  /** Counters, server and breaker admission held on the upstream; given back once. */
  private readonly account: UpstreamAccount;
  private staleRetried = false;
  private lastCode: ErrorCode = 'ZL_UPSTREAM_UNAVAILABLE';
  private readonly body: RequestBody;
  private sentContinue = false;
  private reader: ResponseReader | null = null;
  private dirty = false;
  /** The native job carrying the rest of the response body, if any. */
  private spliced: SplicedBody | null = null;
  /** A cancelled native body job has yet to say what it delivered: the end (metrics, log) waits. */
  private awaitingSplice = false;
  /** Response body bytes that went through the native splice pump. */
  splicedBytes = 0;
  private readonly clock = new StallClock();

  constructor(
    private readonly host: ExchangeHost,
    readonly down: Downstream,
    readonly head: RequestHead,
    readonly match: RouteMatch<CompiledRoute>,
    readonly upstream: Upstream,
  ) {
    const s = host.settings;
    this.clientIp = requestClientIp(s.realIpHeader, s.trusted, head, down);
    this.forward = buildForwardHead(head, {
      clientIp: down.clientIp,
      realIp: this.clientIp,
      proto: s.proto,
      trusted: down.trusted,
      path: match.path,
      rules: match.route.value.request,
    });
    this.requestId = this.forward.requestId;
    this.pool = poolOf(upstream);
    this.account = new UpstreamAccount(upstream, this.pool, this.startedAt);
    const client = this.clientIp === down.clientIp ? down.clientHash : hash32(this.clientIp);
    this.picker = new ServerPicker(
      upstream,
      this.pool,
      requestHash(upstream, client, head, match.path),
      this,
    );
    this.body = new RequestBody(host.maxBodyReplay, head.contentLength <= 0 && !head.chunked);
  }

  /** Request body bytes received from the client. */
  get bodyBytes(): number {
    return this.body.bytes;
  }

  /** The request body was fully received. */
  get bodyDone(): boolean {
    return this.body.done;
  }

  get route(): CompiledRoute {
    return this.match.route.value;
  }

  /** Tries on a server (connects included), and the server of the current (or the last) one. */
  get attempts(): number {
    return this.account.attempts;
  }

  get endpoint(): Endpoint | null {
    return this.account.endpoint;
  }

  start(): void {
    if (!this.account.admit(nowMs())) {
      this.fail('ZL_CIRCUIT_OPEN');
      return;
    }
    this.attempt();
  }

  private attempt(): void {
    if (this.state === 'done') return;
    this.state = 'picking';
    this.picker.next(this.account.attempts === 0);
  }

  // PickOwner (server-picker.ts): a server was picked, or none yet, or none at all
  onPicked(e: Endpoint): void {
    this.connectTo(e, false);
  }

  onWaiting(state: 'backoff' | 'queued'): void {
    this.state = state;
  }

  onNoServer(code: ErrorCode): void {
    this.fail(this.account.attempts === 0 ? code : this.lastCode);
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
      const c = code ?? 'ZL_UPSTREAM_CONNECT_FAILED';
      const e = this.endpoint;
      if (e !== null) metrics.upstreamConnectFailures.labels(this.upstream.name, e.address, c).inc();
      this.attemptFailed(c, 'connect', false);
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
    if (ok) this.down.resumeBody();
    else this.down.pauseBody();
  }

  /**
   * An attempt failed before the client got anything. `stale`: it ran on a reused connection
   * that died before any response byte (the keep-alive race), which is not the server's fault.
   */
  private attemptFailed(code: ErrorCode, kind: FailureKind, stale: boolean): void {
    const e = this.endpoint;
    const now = nowMs();
    this.dropConnection();
    this.lastCode = code;
    if (stale && !this.staleRetried && this.replayableRequest() && e !== null) {
      this.staleRetried = true;
      this.account.release();
      this.connectTo(e, true); // not an attempt of the retry policy, nor a retry
      return;
    }
    // zipline's own descriptors or ports ran out: no verdict on the server, no retry into that wall
    const local = code === 'ZL_LOCAL_EXHAUSTED';
    if (local) this.account.abandon();
    else if (kind !== 'status') this.account.judge(false, now);
    this.account.release();
    if (!local && this.mayRetry(kind)) {
      this.account.enterRetry();
      this.attempt();
      return;
    }
    this.fail(code);
  }

  /** The retry policy (retry-policy.ts) on this exchange. */
  private mayRetry(kind: FailureKind): boolean {
    return mayRetry(this.upstream, kind, {
      headSent: this.headSent,
      attempts: this.account.attempts,
      retrying: this.account.retrying,
      replayable: this.replayableRequest(),
      bodyLost: this.body.lost,
    });
  }

  /** Safe to repeat (see retry-policy.ts) and its body still at hand. */
  private replayableRequest(): boolean {
    return !this.body.lost && safeToRepeat(this.head);
  }

  /** Request body bytes as framed for the upstream (Content-Length bytes, or chunked coding). */
  bodyChunk(chunk: Buffer): void {
    if (this.state === 'done') return;
    if (!this.body.add(chunk, this.conn?.socket ?? null)) this.down.pauseBody();
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
    if (conn === this.conn) this.down.resumeBody();
  }

  /** The client can take more response bytes. */
  onClientDrain(): void {
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
    this.headSent = true;
    this.down.sendHead(this, resp, null);
  }

  onBody(chunk: Buffer): void {
    this.bytesOut += chunk.length;
    if (!this.down.write(chunk)) this.conn?.pauseReads();
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
    if (resp.status === 408 && this.conn?.reused === true && !this.staleRetried && this.replayableRequest()) {
      this.attemptFailed('ZL_UPSTREAM_RESET', 'reset', true);
      return;
    }
    const s = this.upstream.settings;
    const e = this.endpoint as Endpoint;
    const now = nowMs();
    const retryable = s.retryStatuses.has(resp.status);
    this.account.judge(!retryable, now);
    if (retryable) {
      if (resp.status === 503) honourRetryAfter(e, resp, now);
      if (this.mayRetry('status')) {
        this.attemptFailed(codeForStatus(resp.status), 'status', false);
        return;
      }
    }
    this.status = resp.status;
    this.state = 'streaming';
    const len = resp.contentLength;
    if (resp.body === 'length' && len > 0 && len <= INLINE_BODY_MAX && buf.length - end >= len) {
      // the common small response: head and body in one write
      this.headSent = true;
      this.down.sendHead(this, resp, buf.subarray(end, end + len));
      this.bytesOut += len;
      this.dirty = end + len < buf.length;
      this.complete();
      return;
    }
    (this.reader as ResponseReader).startBody(resp, buf, end);
    // large Content-Length bodies: the rest goes through the native splice pump when it can
    if (this.state === 'streaming' && this.host.spliceBodies && this.conn !== null && !this.conn.encrypted) {
      const idle = this.route.idleTimeoutMs ?? this.upstream.settings.idleTimeoutMs;
      this.spliced = SplicedBody.start(this, this.conn, this.reader as ResponseReader, this.down, idle);
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
    this.finished();
    const head = buildSwitchingHead(resp, this.route.response);
    if (!this.down.upgrade(this, conn, head, rest)) socket.destroy();
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

  /** Ends the exchange with an error: an error response, or an abort once the head was sent. */
  fail(code: ErrorCode): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.code = code;
    if (!this.headSent) this.status = ERROR_CATALOG[code].status;
    this.cleanup();
    this.finished();
    this.down.fail(this, code);
  }

  /** The client went away (499). */
  clientGone(): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.code = 'ZL_CLIENT_ABORTED';
    if (!this.headSent) this.status = 499;
    this.account.abandon();
    this.cleanup();
    this.finished();
  }

  /** Timeouts, called by the listener's sweep with the current time. */
  tick(now: number, clientIdleMs: number): void {
    // a spliced body is timed by the native thread
    if (this.state !== 'waiting' && (this.state !== 'streaming' || this.spliced !== null)) return;
    const up = this.upstream.settings;
    const header = this.route.responseHeaderTimeoutMs ?? up.responseHeaderTimeoutMs;
    const idle = this.route.idleTimeoutMs ?? up.idleTimeoutMs;
    const mark = (this.reader?.bytes ?? 0) + this.body.bytes + this.bytesOut;
    const code = this.clock.due(this.state, mark, now, clientIdleMs, header, idle);
    if (code === 'ZL_UPSTREAM_RESPONSE_TIMEOUT') this.attemptFailed(code, 'timeout', false);
    else if (code !== null) this.fail(code);
  }

  private cleanup(): void {
    this.picker.cancel();
    this.awaitingSplice = this.spliced?.cancel((bytes) => this.splicedUntil(bytes)) === true;
    this.spliced = null;
    if (this.cancelConnect !== null) {
      this.cancelConnect();
      this.cancelConnect = null;
    }
    this.dropConnection();
    this.account.release();
  }

  private dropConnection(): void {
    const conn = this.conn;
    this.conn = null;
    if (conn !== null) conn.destroy();
  }

  private finished(): void {
    // it can end before it started (a malformed body read with its head): close() gives back what was taken
    this.account.close();
    this.body.release();
    if (!this.awaitingSplice) this.host.onExchangeEnd(this);
  }

  /** A cancelled body job delivered `bytes` (0: it did not say in time); the exchange ends now. */
  private splicedUntil(bytes: number): void {
    this.awaitingSplice = false;
    this.bytesOut += bytes;
    this.splicedBytes = bytes;
    this.host.onExchangeEnd(this);
  }
}
