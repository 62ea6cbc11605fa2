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
 * goes out as it comes, chunked for an HTTP/1.1 client when it has no length. Trailers reach an
 * HTTP/2 client (gRPC's status) in a HEADERS frame and an HTTP/1.1 one in the last chunk's trailer
 * section (RFC 9112 §7.1.2; dropped when the response has a Content-Length and so no such section).
 */
import type { ClientHttp2Stream, IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import { nowMs } from '../../core/clock.js';
import type { ErrorCode } from '../../errors.js';
import type { Endpoint } from '../../upstream/endpoint.js';
import { ExchangeBase } from '../exchange-base.js';
import { headFor } from '../forward-head.js';
import { cancelStream, refuseStream } from '../h2-reset.js';
import { loadHttp2 } from '../http2-module.js';
import { ChunkedDecoder } from '../parser/chunked.js';
import type { ResponseHead } from '../parser/response-head.js';
import type { FailureKind } from '../retry-policy.js';
import { lastChunk, requestHeaders, responseHead, trailerFields } from './messages.js';
import type { H2Session } from './sessions.js';

const CRLF = Buffer.from('\r\n', 'latin1');
const END_STREAM = 0x1;
/** Node's codes for a session the server broke (bytes that are not HTTP/2 frames, a flood). */
const PROTOCOL_ERRORS = new Set([
  'ERR_HTTP2_ERROR',
  'ERR_HTTP2_SESSION_ERROR',
  'ERR_HTTP2_TOO_MANY_INVALID_FRAMES',
]);

export class H2Exchange extends ExchangeBase {
  readonly splicedBytes = 0;
  bodyBytes = 0;
  bodyDone = this.head.contentLength <= 0 && !this.head.chunked;
  trailersExpected = this.down.httpVersion === '2';
  trailers: OutgoingHttpHeaders | null = null;
  private stream: ClientHttp2Stream | null = null;
  /** The session of the current stream. */
  private session: H2Session | null = null;
  /** The error the current stream ended with (Node's code), if any. */
  private streamError = '';
  /** The current stream's response ended (END_STREAM, or its session's end). */
  private ended = false;
  /** The request body (decoded) kept for a retry, while it fits `max_body_replay`. */
  private kept: Buffer[] = [];
  /** Request body bytes (decoded) received so far; only those up to `max_body_replay` are kept. */
  private bodyDataBytes = 0;
  /** Part of the body went upstream and was not kept: no retry. */
  private bodyLost = false;
  private readonly decoder = this.head.chunked ? new ChunkedDecoder() : null;
  /** The response goes to an HTTP/1.1 client in chunked coding. */
  private chunkedOut = false;
  private sentContinue = false;

  onPicked(e: Endpoint): void {
    this.account.acquire(e);
    this.state = 'connecting';
    const cancel = this.pool.h2.session(e, (s, code) => this.onSession(s, code));
    if (this.state === 'connecting') this.cancelConnect = cancel;
  }

  private onSession(s: H2Session | null, code: ErrorCode | null): void {
    this.cancelConnect = null;
    if (this.state !== 'connecting') return;
    if (s === null) {
      this.connectFailed(code);
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
      stream = s.request(headers, this.bodyDone && this.bodyDataBytes === 0);
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
    this.session = s;
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
      if (stream === this.stream) this.upstreamTakes(true);
    });
    let ok = true;
    for (const chunk of this.kept) ok = stream.write(chunk) && ok;
    if (this.bodyDataBytes > this.host.maxBodyReplay) this.forget();
    if (this.bodyDone) {
      if (this.bodyDataBytes > 0) stream.end(); // else it went with END_STREAM on its HEADERS
      this.clock.requestSentAt = nowMs();
    } else if (this.head.expectContinue && !this.sentContinue) {
      this.sentContinue = true;
      this.down.sendContinue();
    }
    this.upstreamTakes(ok);
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
    this.bodyDataBytes += data.length;
    if (!this.bodyLost) this.kept.push(data);
    if (stream === null) {
      // not connected yet: kept until then, and the client paused past what a replay may keep
      if (this.bodyDataBytes > this.host.maxBodyReplay) this.upstreamTakes(false);
      return;
    }
    if (this.bodyDataBytes > this.host.maxBodyReplay) this.forget();
    if (!stream.write(data)) this.upstreamTakes(false);
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
    let resp: ResponseHead;
    try {
      resp = responseHead(h, this.head.method, (flags & END_STREAM) !== 0);
    } catch {
      this.account.judge(false, nowMs());
      this.fail('ZL_UPSTREAM_BAD_RESPONSE');
      return;
    }
    if (this.retriedStatus(resp)) return;
    this.status = resp.status;
    this.state = 'streaming';
    // a response that ended with its head has no trailers (gRPC's "trailers-only" answer)
    if ((flags & END_STREAM) !== 0) this.trailersExpected = false;
    this.chunkedOut = resp.body === 'chunked' && this.down.passesChunked;
    this.sendHeadToClient(resp, null);
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
    if (!ok) {
      this.clientTakes(false);
      stream.pause();
    }
  }

  /** The client can take more response bytes. */
  onClientDrain(): void {
    this.clientTakes(true);
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
  protected attemptFailed(code: ErrorCode, kind: FailureKind): void {
    if (kind === 'timeout') this.session?.drain();
    this.dropAttempt();
    this.retryOrFail(code, kind);
  }

  protected bodyIsLost(): boolean {
    return this.bodyLost;
  }

  private complete(): void {
    this.state = 'done';
    const stream = this.stream;
    this.stream = null;
    // the server answered before the whole request body: the rest is not wanted (RFC 9113 §8.1)
    if (stream !== null && !stream.closed && !this.bodyDone) refuseStream(stream);
    if (this.chunkedOut) this.down.write(lastChunk(this.trailers));
    this.account.release();
    this.finished();
    this.down.finish(this);
  }

  /** Timeouts, called by the listener's sweep with the current time. */
  tick(now: number, clientIdleMs: number): void {
    if (this.state !== 'waiting' && this.state !== 'streaming') return;
    this.checkDeadlines(this.state, this.bodyBytes + this.bytesOut, now, clientIdleMs);
  }

  protected dropAttempt(): void {
    const stream = this.stream;
    this.stream = null;
    if (stream !== null && !stream.closed) cancelStream(stream); // never END_STREAM on a body cut short
  }

  protected finished(): void {
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
