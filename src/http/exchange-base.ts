/**
 * What a proxied request does the same whatever the upstream speaks (`Exchange`: HTTP/1.1 over
 * pooled connections; `H2Exchange`: streams on HTTP/2 sessions): the forwarded head and request
 * id, the breaker's admission, server picks and the retry policy, deadlines, and the two ends that
 * are not a response (`fail`, `clientGone`). A subclass says how an attempt runs and how it is
 * torn down.
 */
import { hash32 } from '../balancer/hash-fn.js';
import { nowMs } from '../core/clock.js';
import { ERROR_CATALOG, type ErrorCode } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { Upstream } from '../upstream/upstream.js';
import type { Downstream } from './downstream.js';
import type { ExchangeHost } from './exchange-host.js';
import { buildForwardHead, type ForwardedHead } from './forward-head.js';
import type { RequestHead } from './parser/request-head.js';
import type { ResponseHead } from './parser/response-head.js';
import { type HttpPool, poolOf } from './pool.js';
import type { ProxyExchange } from './proxy-exchange.js';
import { requestClientIp } from './real-ip.js';
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
import { StallClock } from './stall-clock.js';
import { UpstreamAccount } from './upstream-account.js';

export type ExchangeState =
  | 'picking'
  | 'queued'
  | 'backoff'
  | 'connecting'
  | 'waiting'
  | 'streaming'
  | 'done';

export abstract class ExchangeBase implements PickOwner, ProxyExchange {
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
  protected readonly forward: ForwardedHead;
  protected readonly pool: HttpPool;
  protected readonly picker: ServerPicker;
  /** Counters, server and breaker admission held on the upstream; given back once. */
  protected readonly account: UpstreamAccount;
  protected readonly clock = new StallClock();
  /** The client's request body is paused because the upstream takes no more (its stall is the upstream's). */
  private bodyHeld = false;
  /** The response is paused because the client takes no more (its stall is the client's). */
  private responseHeld = false;
  protected lastCode: ErrorCode = 'ZL_UPSTREAM_UNAVAILABLE';
  /** Withdraws the attempt's wait for a connection (or session) while it is being opened. */
  protected cancelConnect: (() => void) | null = null;
  abstract readonly bodyBytes: number;
  abstract readonly bodyDone: boolean;
  abstract readonly splicedBytes: number;
  abstract bodyChunk(chunk: Buffer): void;
  abstract bodyEnd(): void;
  abstract onClientDrain(): void;
  abstract tick(now: number, clientIdleMs: number): void;

  constructor(
    protected readonly host: ExchangeHost,
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

  protected attempt(): void {
    if (this.state === 'done') return;
    this.state = 'picking';
    this.picker.next(this.account.attempts === 0);
  }

  // PickOwner (server-picker.ts): a server was picked, or none yet, or none at all
  abstract onPicked(e: Endpoint): void;

  onWaiting(state: 'backoff' | 'queued'): void {
    this.state = state;
  }

  onNoServer(code: ErrorCode): void {
    this.fail(this.account.attempts === 0 ? code : this.lastCode);
  }

  /** The attempt's connection (or session) could not be opened: counted, then retried or the end. */
  protected connectFailed(code: ErrorCode | null): void {
    const c = code ?? 'ZL_UPSTREAM_CONNECT_FAILED';
    const e = this.endpoint;
    if (e !== null) metrics.upstreamConnectFailures.labels(this.upstream.name, e.address, c).inc();
    this.attemptFailed(c, 'connect');
  }

  /** An attempt failed before the client got anything (its connection or stream dropped). */
  protected abstract attemptFailed(code: ErrorCode, kind: FailureKind): void;

  /**
   * After an attempt failed and its connection or stream was dropped: the server's verdict,
   * then another attempt if the retry policy allows one, else the error.
   */
  protected retryOrFail(code: ErrorCode, kind: FailureKind): void {
    this.lastCode = code;
    // zipline's own descriptors or ports ran out: no verdict on the server, no retry into that wall
    const local = code === 'ZL_LOCAL_EXHAUSTED';
    if (local) this.account.abandon();
    else if (kind !== 'status') this.account.judge(false, nowMs());
    this.account.release();
    if (!local && this.mayRetry(kind)) {
      this.account.enterRetry();
      this.attempt();
      return;
    }
    this.fail(code);
  }

  /** Part of the request body was sent and not kept (too large to replay). */
  protected abstract bodyIsLost(): boolean;

  /** Safe to repeat (see retry-policy.ts) and its body still at hand. */
  protected replayable(): boolean {
    return !this.bodyIsLost() && safeToRepeat(this.head);
  }

  /** The retry policy (retry-policy.ts) on this exchange. */
  protected mayRetry(kind: FailureKind): boolean {
    return mayRetry(this.upstream, kind, {
      headSent: this.headSent,
      attempts: this.account.attempts,
      retrying: this.account.retrying,
      replayable: this.replayable(),
      bodyLost: this.bodyIsLost(),
    });
  }

  /**
   * A final response from the attempt's server: the breaker and passive health hear it, and a
   * status in `retry.on` is retried when it may be (true: it was, the response is not passed on).
   */
  protected retriedStatus(resp: ResponseHead): boolean {
    const now = nowMs();
    const retryable = this.upstream.settings.retryStatuses.has(resp.status);
    this.account.judge(!retryable, now);
    if (!retryable) return false;
    if (resp.status === 503) honourRetryAfter(this.endpoint as Endpoint, resp, now);
    if (!this.mayRetry('status')) return false;
    this.attemptFailed(codeForStatus(resp.status), 'status');
    return true;
  }

  /** Gives the client the response head; false when it cannot take it (the exchange then failed: 502). */
  protected sendHeadToClient(resp: ResponseHead, inline: Buffer | null): boolean {
    if (!this.down.sendHead(this, resp, inline)) {
      this.fail('ZL_UPSTREAM_BAD_RESPONSE');
      return false;
    }
    this.headSent = true;
    return true;
  }

  /**
   * The client took no more of the response (`more` false: the subclass pauses the upstream) or
   * can take more again (it resumes it). Only the stall's attribution is kept here.
   */
  protected clientTakes(more: boolean): void {
    this.responseHeld = !more;
  }

  /** Resumes the client's request body when the upstream takes `more`, else pauses it. */
  protected upstreamTakes(more: boolean): void {
    this.bodyHeld = !more;
    if (more) this.down.resumeBody();
    else this.down.pauseBody();
  }

  /**
   * The deadline due at `now`, if any, with `mark` the bytes moved so far: the response header's
   * (retried as a timeout), else the request body's or the response's stall (the end), timed by
   * the side that is not taking bytes.
   */
  protected checkDeadlines(
    phase: 'waiting' | 'streaming',
    mark: number,
    now: number,
    clientIdleMs: number,
  ): void {
    const up = this.upstream.settings;
    const header = this.route.responseHeaderTimeoutMs ?? up.responseHeaderTimeoutMs;
    const idle = this.route.idleTimeoutMs ?? up.idleTimeoutMs;
    const held = phase === 'waiting' ? this.bodyHeld : this.responseHeld;
    const code = this.clock.due(phase, mark, now, clientIdleMs, header, idle, held);
    if (code === 'ZL_UPSTREAM_RESPONSE_TIMEOUT') this.attemptFailed(code, 'timeout');
    else if (code !== null) this.fail(code);
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

  /** The client went away (499), or zipline closed its connection (`ZL_DRAIN_TIMEOUT`). */
  clientGone(code: ErrorCode = 'ZL_CLIENT_ABORTED'): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.code = code;
    if (!this.headSent) this.status = ERROR_CATALOG[code].status;
    this.account.abandon();
    this.cleanup();
    this.finished();
  }

  /** Stops whatever is in flight (pick, connect, connection or stream) and gives back the server. */
  private cleanup(): void {
    this.picker.cancel();
    if (this.cancelConnect !== null) {
      this.cancelConnect();
      this.cancelConnect = null;
    }
    this.dropAttempt();
    this.account.release();
  }

  /** Drops the attempt's connection or stream (and a body job), if any. */
  protected abstract dropAttempt(): void;

  /** The exchange is over: what it holds is given back and the listener records it. */
  protected abstract finished(): void;
}
