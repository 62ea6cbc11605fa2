/**
 * One proxied request to an `http_version: 2` upstream: a stream on the server's shared HTTP/2
 * session (sessions.ts) instead of a pooled HTTP/1.1 connection. Routing, the breaker, server
 * picks, retries and their budget, timeouts, the access log and the client side are those of
 * `Exchange` (exchange.ts), through the same helpers.
 *
 * The request body arrives as the client side frames it for HTTP/1.1 and goes out as DATA:
 * chunked bodies are decoded (`ChunkedDecoder`; the client side has validated them already).
 * Up to `max_body_replay` of it is kept so an attempt can be retried (`mayRetry`), and a stream
 * the server refused (REFUSED_STREAM, or past a GOAWAY's last stream) was not processed, so it
 * may go elsewhere whatever its method (RFC 9113 §8.7).
 *
 * The response head is given to the client side as an HTTP/1.1 head (messages.ts); its body
 * goes out as it comes, chunked for an HTTP/1.1 client when it has no length; trailers reach an
 * HTTP/2 client (gRPC's status) and are dropped for an HTTP/1.1 one.
 */
import type { ClientHttp2Stream, IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import { hash32 } from '../../balancer/hash-fn.js';
import { nowMs } from '../../core/clock.js';
import { ERROR_CATALOG, type ErrorCode } from '../../errors.js';
import { metrics } from '../../metrics/catalog.js';
import type { Endpoint } from '../../upstream/endpoint.js';
import type { Upstream } from '../../upstream/upstream.js';
import type { Downstream } from '../downstream.js';
import type { ExchangeHost } from '../exchange-host.js';
import { buildForwardHead, type ForwardedHead, headFor } from '../forward-head.js';
import { loadHttp2 } from '../http2-module.js';
import { ChunkedDecoder } from '../parser/chunked.js';
import type { RequestHead } from '../parser/request-head.js';
import type { ResponseHead } from '../parser/response-head.js';
import { type HttpPool, poolOf } from '../pool.js';
import type { ProxyExchange } from '../proxy-exchange.js';
import { requestClientIp } from '../real-ip.js';
import {
  codeForStatus,
  type FailureKind,
  honourRetryAfter,
  mayRetry,
  requestHash,
  safeToRepeat,
} from '../retry-policy.js';
import type { RouteMatch } from '../route-table.js';
import { type PickOwner, ServerPicker } from '../server-picker.js';
import type { CompiledRoute } from '../settings.js';
import { StallClock } from '../stall-clock.js';
import { UpstreamAccount } from '../upstream-account.js';
import { requestHeaders, responseHead, trailerFields } from './messages.js';
import type { H2Session } from './sessions.js';

const CRLF = Buffer.from('\r\n', 'latin1');
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');
const END_STREAM = 0x1;
/** Node's codes for a session the server broke (bytes that are not HTTP/2 frames, a flood). */
const PROTOCOL_ERRORS = new Set([
  'ERR_HTTP2_ERROR',
  'ERR_HTTP2_SESSION_ERROR',
  'ERR_HTTP2_TOO_MANY_INVALID_FRAMES',
]);

type State = 'picking' | 'queued' | 'backoff' | 'connecting' | 'waiting' | 'streaming' | 'done';

export class H2Exchange implements ProxyExchange, PickOwner {
  state: State = 'picking';
  readonly startedAt = performance.now();
  readonly requestId: string;
  code: ErrorCode | null = null;
  status = 0;
  readonly clientIp: string;
  bytesOut = 0;
  readonly splicedBytes = 0;
  headSent = false;
  bodyBytes = 0;
  bodyDone: boolean;
  trailersExpected: boolean;
  trailers: OutgoingHttpHeaders | null = null;
  private readonly forward: ForwardedHead;
  private readonly pool: HttpPool;
  private readonly picker: ServerPicker;
  private readonly account: UpstreamAccount;
  private readonly clock = new StallClock();
  private stream: ClientHttp2Stream | null = null;
  /** The error the current stream ended with (Node's code), if any. */
  private streamError = '';
  /** The current stream's response ended (END_STREAM, or its session's end). */
  private ended = false;
  private cancelSession: (() => void) | null = null;
  private lastCode: ErrorCode = 'ZL_UPSTREAM_UNAVAILABLE';
  /** The request body (decoded) kept for a retry, while it fits `max_body_replay`. */
  private kept: Buffer[] = [];
  private keptBytes = 0;
  /** Part of the body went upstream and was not kept: no retry. */
  private bodyLost = false;
  private readonly decoder: ChunkedDecoder | null;
  /** The response goes to an HTTP/1.1 client in chunked coding. */
  private chunkedOut = false;
  private sentContinue = false;

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
    this.bodyDone = head.contentLength <= 0 && !head.chunked;
    this.decoder = head.chunked ? new ChunkedDecoder() : null;
    this.trailersExpected = down.httpVersion === '2';
  }

  get route(): CompiledRoute {
    return this.match.route.value;
  }

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

  onPicked(e: Endpoint): void {
    this.account.acquire(e);
    this.state = 'connecting';
    const cancel = this.pool.h2.session(e, (s, code) => this.onSession(s, code));
    if (this.state === 'connecting') this.cancelSession = cancel;
  }

  onWaiting(state: 'backoff' | 'queued'): void {
    this.state = state;
  }

  onNoServer(code: ErrorCode): void {
    this.fail(this.account.attempts === 0 ? code : this.lastCode);
  }

  private onSession(s: H2Session | null, code: ErrorCode | null): void {
    this.cancelSession = null;
    if (this.state !== 'connecting') return;
    if (s === null) {
      const c = code ?? 'ZL_UPSTREAM_CONNECT_FAILED';
      const e = this.endpoint;
      if (e !== null) metrics.upstreamConnectFailures.labels(this.upstream.name, e.address, c).inc();
      this.attemptFailed(c, 'connect');
      return;
    }
    const text = headFor(this.forward, this.endpoint?.server);
    let stream: ClientHttp2Stream;
    try {
      const headers = requestHeaders(
        text,
        this.head.method,
        this.match.path,
        this.upstream.settings.tls !== null,
      );
      stream = s.request(headers, this.bodyDone && this.keptBytes === 0);
    } catch (err) {
      const c = (err as NodeJS.ErrnoException).code ?? '';
      // the session went away between the pick and now (GOAWAY, a reset): nothing was sent
      if (
        c === 'ERR_HTTP2_INVALID_SESSION' ||
        c === 'ERR_HTTP2_GOAWAY_SESSION' ||
        c === 'ERR_HTTP2_OUT_OF_STREAMS'
      )
        this.attemptFailed('ZL_UPSTREAM_RESET', 'connect');
      // a field HTTP/2 refuses (a connection-specific one a route's `set` adds)
      else this.fail('ZL_HTTP_BAD_REQUEST');
      return;
    }
    this.stream = stream;
    this.streamError = '';
    this.ended = false;
    this.state = 'waiting';
    // 'close' follows, with the stream's code
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (stream === this.stream) this.streamError = err.code ?? '';
    });
    stream.on('response', (h: IncomingHttpHeaders, flags: number) => this.onResponse(stream, h, flags));
    stream.on('data', (chunk: Buffer) => this.onData(stream, chunk));
    stream.on('trailers', (t: IncomingHttpHeaders) => {
      if (stream === this.stream) this.trailers = trailerFields(t);
    });
    // END_STREAM: complete, unless the stream was torn down (Node ends the readable side of a
    // stream whose session died too; `onClose` then decides by its code)
    stream.on('end', () => {
      if (stream !== this.stream) return;
      this.ended = true;
      if (this.state === 'streaming' && !stream.destroyed) this.complete();
    });
    stream.on('close', () => this.onClose(stream));
    stream.on('drain', () => {
      if (stream === this.stream) this.down.resumeBody();
    });
    let ok = true;
    for (const chunk of this.kept) ok = stream.write(chunk) && ok;
    if (this.keptBytes > this.host.maxBodyReplay) this.forget();
    if (this.bodyDone) {
      if (this.keptBytes > 0 || this.bodyLost) stream.end();
      this.clock.requestSentAt = nowMs();
    } else if (this.head.expectContinue && !this.sentContinue) {
      this.sentContinue = true;
      this.down.sendContinue();
    }
    if (ok) this.down.resumeBody();
    else this.down.pauseBody();
  }

  /** Request body bytes as the client side frames them (chunked coding is decoded here). */
  bodyChunk(chunk: Buffer): void {
    if (this.state === 'done') return;
    this.bodyBytes += chunk.length;
    if (this.decoder === null) this.bodyData(chunk);
    else this.decoder.feed(chunk, 0, chunk.length, (data) => this.bodyData(data));
  }

  private bodyData(data: Buffer): void {
    if (data.length === 0) return;
    const stream = this.stream;
    if (!this.bodyLost) {
      this.kept.push(data);
      this.keptBytes += data.length;
    }
    if (stream === null) {
      // not connected yet: kept until then, and the client paused past what a replay may keep
      if (this.keptBytes > this.host.maxBodyReplay) this.down.pauseBody();
      return;
    }
    if (this.keptBytes > this.host.maxBodyReplay) this.forget();
    if (!stream.write(data)) this.down.pauseBody();
  }

  bodyEnd(): void {
    if (this.bodyDone) return;
    this.bodyDone = true;
    if (this.stream === null) return; // sent with the kept body once connected
    this.stream.end();
    if (this.state === 'waiting') this.clock.requestSentAt = nowMs();
  }

  /** The body sent so far cannot be replayed any more. */
  private forget(): void {
    this.bodyLost = true;
    this.kept = [];
  }

  private onResponse(stream: ClientHttp2Stream, h: IncomingHttpHeaders, flags: number): void {
    if (stream !== this.stream || this.state !== 'waiting') return;
    const status = Number(h[':status']);
    const e = this.endpoint as Endpoint;
    const now = nowMs();
    let resp: ResponseHead;
    try {
      resp = responseHead(h, this.head.method, (flags & END_STREAM) !== 0);
    } catch {
      this.account.judge(false, now);
      this.dropStream();
      this.fail('ZL_UPSTREAM_BAD_RESPONSE');
      return;
    }
    const retryable = this.upstream.settings.retryStatuses.has(status);
    this.account.judge(!retryable, now);
    if (retryable) {
      if (status === 503) honourRetryAfter(e, resp, now);
      if (this.mayRetry('status')) {
        this.attemptFailed(codeForStatus(status), 'status');
        return;
      }
    }
    this.status = status;
    this.state = 'streaming';
    this.headSent = true;
    // a response that ended with its head has no trailers (gRPC's "trailers-only" answer)
    if ((flags & END_STREAM) !== 0) this.trailersExpected = false;
    this.chunkedOut = resp.body === 'chunked' && this.down.passesChunked;
    this.down.sendHead(this, resp, null);
  }

  private onData(stream: ClientHttp2Stream, chunk: Buffer): void {
    if (stream !== this.stream || this.state !== 'streaming') return;
    this.bytesOut += chunk.length;
    let ok: boolean;
    if (this.chunkedOut) {
      this.down.write(Buffer.from(`${chunk.length.toString(16)}\r\n`, 'latin1'));
      this.down.write(chunk);
      ok = this.down.write(CRLF);
    } else ok = this.down.write(chunk);
    if (!ok) stream.pause();
  }

  /** The client can take more response bytes. */
  onClientDrain(): void {
    if (this.stream !== null && !this.stream.destroyed) this.stream.resume();
  }

  private onClose(stream: ClientHttp2Stream): void {
    if (stream !== this.stream) return;
    this.stream = null;
    const http2 = loadHttp2().constants;
    if (this.state === 'waiting') {
      const refused = stream.rstCode === http2.NGHTTP2_REFUSED_STREAM;
      const code: ErrorCode = refused ? 'ZL_UPSTREAM_RESET' : closeCode(stream, this.streamError);
      // a refused stream was not processed (RFC 9113 §8.7): as safe to send elsewhere as a failed connect
      this.attemptFailed(code, refused ? 'connect' : 'reset');
    } else if (this.state === 'streaming') {
      if (this.ended && stream.rstCode === http2.NGHTTP2_NO_ERROR && this.streamError === '') this.complete();
      else this.fail(closeCode(stream, this.streamError));
    }
  }

  /** An attempt failed before the client got anything. */
  private attemptFailed(code: ErrorCode, kind: FailureKind): void {
    this.dropStream();
    this.lastCode = code;
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

  private mayRetry(kind: FailureKind): boolean {
    return mayRetry(this.upstream, kind, {
      headSent: this.headSent,
      attempts: this.account.attempts,
      retrying: this.account.retrying,
      replayable: !this.bodyLost && safeToRepeat(this.head),
      bodyLost: this.bodyLost,
    });
  }

  private complete(): void {
    this.state = 'done';
    const stream = this.stream;
    this.stream = null;
    // the server answered before the whole request body: the rest is not wanted
    if (stream !== null && !stream.closed && !this.bodyDone)
      stream.close(loadHttp2().constants.NGHTTP2_NO_ERROR);
    if (this.chunkedOut) this.down.write(LAST_CHUNK);
    this.account.release();
    this.finished();
    this.down.finish(this);
  }

  fail(code: ErrorCode): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.code = code;
    if (!this.headSent) this.status = ERROR_CATALOG[code].status;
    this.cleanup();
    this.finished();
    this.down.fail(this, code);
  }

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
    if (this.state !== 'waiting' && this.state !== 'streaming') return;
    const up = this.upstream.settings;
    const header = this.route.responseHeaderTimeoutMs ?? up.responseHeaderTimeoutMs;
    const idle = this.route.idleTimeoutMs ?? up.idleTimeoutMs;
    const code = this.clock.due(this.state, this.bodyBytes + this.bytesOut, now, clientIdleMs, header, idle);
    if (code === 'ZL_UPSTREAM_RESPONSE_TIMEOUT') this.attemptFailed(code, 'timeout');
    else if (code !== null) this.fail(code);
  }

  private cleanup(): void {
    this.picker.cancel();
    if (this.cancelSession !== null) {
      this.cancelSession();
      this.cancelSession = null;
    }
    this.dropStream();
    this.account.release();
  }

  private dropStream(): void {
    const stream = this.stream;
    this.stream = null;
    if (stream !== null && !stream.closed) stream.close(loadHttp2().constants.NGHTTP2_CANCEL);
  }

  private finished(): void {
    this.account.close();
    this.kept = [];
    this.host.onExchangeEnd(this);
  }
}

/** The code for a stream that closed before its response ended. */
function closeCode(stream: ClientHttp2Stream, error: string): ErrorCode {
  // the server broke HTTP/2, or is no HTTP/2 server at all (its bytes are not frames)
  if (PROTOCOL_ERRORS.has(error)) return 'ZL_UPSTREAM_BAD_RESPONSE';
  return stream.rstCode === 0 && error === '' ? 'ZL_UPSTREAM_PREMATURE_CLOSE' : 'ZL_UPSTREAM_RESET';
}
