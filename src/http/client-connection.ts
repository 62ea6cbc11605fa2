/**
 * One HTTP/1.1 client connection on a raw socket (as HAProxy owns its framing): heads are parsed
 * from the bytes as they arrive (`parser/`), request bodies are delimited here (Content-Length or
 * validated chunked coding, passed through as framed; `max_body`) and handed to the request's
 * `Exchange`, which streams them upstream. One request at a time; pipelined requests wait in a
 * `ReadAhead` (bounded: reading pauses beyond it) and are served in order.
 *
 * Bytes arrive as views valid only during the call: a plain connection reads into one shared
 * buffer (`client-reads.ts`), as upstream sockets do, which spares a fresh ArrayBuffer and the
 * stream machinery per read. So what is kept past the call is copied: a head (the exchange keeps
 * it), a partial head, a pipelined request, request body chunks.
 *
 * Keep-alive follows RFC 9112 §9.3 (HTTP/1.1 persistent unless `Connection: close`; HTTP/1.0
 * only with `keep-alive`). The connection closes after a response when either side asked for it,
 * the request body was not fully read, the response was close-delimited, or the process drains.
 */
import type { Socket } from 'node:net';
import { hash32 } from '../balancer/hash-fn.js';
import { listed } from '../config/address-list.js';
import { type ErrorCode, isZiplineError } from '../errors.js';
import { endedByReset } from '../l4/reset-socket.js';
import { clientAddressOf } from '../proxy-protocol/reader.js';
import type { Upstream } from '../upstream/upstream.js';
import { admitRequest, type Routed } from './admission.js';
import { ClientBody } from './client-body.js';
import type { ClientReads, ReadTarget } from './client-reads.js';
import type { Downstream } from './downstream.js';
import { errorResponse } from './error-response.js';
import { buildClientHead, buildInterimHead } from './forward-response.js';
import type { HttpListener } from './listener.js';
import type { LocalReply } from './local-reply.js';
import { isH2Preface, parseRequestHead, type RequestHead, requestHeadEnd } from './parser/request-head.js';
import type { ResponseHead } from './parser/response-head.js';
import { createExchange, type ProxyExchange } from './proxy-exchange.js';
import { ReadAhead } from './read-ahead.js';
import { keepAliveIdleMs } from './settings.js';
import { type UpgradeEnded, UpgradePump } from './upgrade-pump.js';
import type { UpstreamConnection } from './upstream-connection.js';
import { abortWrites, releaseWrites, writeText } from './write-batch.js';

const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n';

type Reading = 'head' | 'body' | 'none';

export class ClientConnection implements Downstream, ReadTarget {
  readonly clientIp: string;
  readonly clientPort: number;
  readonly trusted: boolean;
  readonly clientHash: number;
  readonly httpVersion = null;
  passesChunked = true;
  exchange: ProxyExchange | null = null;
  upgraded: UpgradePump | null = null;
  requests = 0;
  closed = false;
  readonly startedAt = Date.now();
  /** Set when the head of a request started arriving but is not complete (client_header). */
  headStartedAt = 0;
  private idleMark = -1; // idle tracking for the sweep
  private idleAt = Date.now();

  readonly ahead = new ReadAhead(() => this.listener.settings.maxHeaderBytes); // partial head, pipelined
  private awaitingDrain = false; // the next request waits for 'drain' (nextWhenTaken)
  private reading: Reading = 'head';
  private readonly body = new ClientBody();
  private keepAlive = true;
  private responseKeepAlive = true;
  private closeDelimited = false; // the response's end is the connection's close
  private clientAskedClose = false; // `Connection: close`, or HTTP/1.0 without keep-alive
  private clientEnded = false;
  private method = '';

  constructor(
    readonly socket: Socket,
    private readonly listener: HttpListener,
    reads: ClientReads | null = null,
  ) {
    ({ ip: this.clientIp, port: this.clientPort } = clientAddressOf(socket)); // a PROXY header's, if any
    const s = listener.settings;
    this.trusted = s.trustsAnyone && this.clientIp !== '' && listed(s.trusted, this.clientIp);
    this.clientHash = hash32(this.clientIp);
    if (reads !== null) reads.conn = this;
    else socket.on('data', (chunk: Buffer) => this.onBytes(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', ignoreError);
    socket.on('close', () => this.onClose());
    socket.on('drain', () => {
      if (!this.awaitingDrain) this.exchange?.onClientDrain();
      else if (!this.closed) {
        this.awaitingDrain = false;
        this.nextRequest();
      }
    });
  }

  // ---- reading ----------------------------------------------------------------------------------

  /** Bytes from the client: a view valid during this call (see the header). */
  onBytes(chunk: Buffer): void {
    if (this.closed) return;
    if (this.upgraded !== null) {
      this.upgraded.fromClient(chunk);
      return;
    }
    switch (this.reading) {
      case 'body':
        this.takeBody(chunk);
        return;
      case 'none':
        this.stash(chunk);
        return;
      case 'head': {
        const kept = this.ahead.take(); // joined with what was kept: a new buffer, not a view
        this.parseHead(kept === null ? chunk : Buffer.concat([kept, chunk]));
        return;
      }
    }
  }

  /** Request body bytes (a view), and what follows the body's end kept for later. */
  private takeBody(bytes: Buffer): void {
    const used = this.feedBody(bytes, 0);
    if (used < bytes.length && !this.closed) this.stash(bytes.subarray(used));
  }

  /** Keeps `bytes` (a view) for later: copied. */
  private stash(bytes: Buffer): void {
    if (this.socket.writableEnded) return; // closing: what the client still sends is dropped
    this.ahead.keep(bytes);
    if (this.ahead.full) this.socket.pause();
  }

  private parseHead(input: Buffer): void {
    let buf = input;
    // RFC 9112 §2.2: empty lines (CR LF) before a request line are ignored
    let start = 0;
    while (start + 1 < buf.length && buf[start] === 0x0d && buf[start + 1] === 0x0a) start += 2;
    if (start > 0) buf = buf.subarray(start);
    if (buf.length === 0) return;
    let head: RequestHead;
    let end: number;
    try {
      end = requestHeadEnd(buf, this.listener.settings.maxHeaderBytes);
      if (end < 0) {
        this.ahead.keep(buf);
        if (this.headStartedAt === 0) this.headStartedAt = Date.now();
        return;
      }
      // the exchange keeps the head (its fields index into it): a copy of just the head
      head = parseRequestHead(Buffer.from(buf.subarray(0, end)), end);
    } catch (err) {
      if (!isZiplineError(err)) throw err;
      // the HTTP/2 preface parses as a request line of version 2.0: served as h2c where allowed
      if (
        err.code === 'ZL_HTTP_VERSION_NOT_SUPPORTED' &&
        this.requests === 0 &&
        this.listener.settings.h2c &&
        isH2Preface(buf)
      ) {
        this.handOffToH2(buf);
        return;
      }
      this.reject(err.code);
      return;
    }
    this.headStartedAt = 0;
    if (head.method === 'CONNECT') {
      // a reverse proxy (nginx answers 400; RFC 9110 §9.1: 501); a tunnel http_proxy entry serves it
      this.reject('ZL_HTTP_NOT_IMPLEMENTED');
      return;
    }
    this.beginRequest(head, buf, end);
  }

  private beginRequest(head: RequestHead, buf: Buffer, end: number): void {
    this.requests++;
    this.method = head.method;
    // after a FIN, `client_fin: finish` still serves what was pipelined (finish() closes after it)
    this.clientAskedClose = !head.keepAlive;
    this.keepAlive =
      head.keepAlive &&
      (!this.clientEnded || this.listener.settings.finishOnClientFin) &&
      !this.listener.draining();
    this.passesChunked = head.minor === 1;
    this.reading = this.body.begin(head) ? 'body' : 'none';
    const match = admitRequest(this.listener, head, this);
    if (typeof match === 'string' || match.route.value.local !== null) {
      this.afterLocalResponse(head, buf, end, match);
      return;
    }
    this.body.limit = match.route.value.maxBody;
    const upstream = this.listener.upstream(match.route.value.upstream) as Upstream;
    const ex = createExchange(this.listener, this, head, match, upstream);
    this.exchange = ex;
    this.listener.onExchangeStart();
    // the rest of this read (body bytes, or the next pipelined request) is taken in before the
    // exchange starts, so that anything it does synchronously sees a consistent connection
    if (end < buf.length) {
      const rest = buf.subarray(end);
      if (this.reading === 'body') this.takeBody(rest);
      else this.stash(rest);
    }
    if (this.exchange === ex) ex.start();
  }

  /** The socket goes to node:http2 (listener.acceptH2c), which reads it natively: it is let go, not closed. */
  private handOffToH2(bytes: Buffer): void {
    this.closed = true;
    this.ahead.clear();
    this.headStartedAt = 0;
    this.listener.acceptH2c(this, bytes);
  }

  /** A request zipline answers itself (an error, or a route's redirect/respond): its body is not read. */
  private afterLocalResponse(head: RequestHead, buf: Buffer, end: number, answer: ErrorCode | Routed): void {
    this.listener.localAnswer(this, head, answer);
    const keep = this.keepAlive && this.reading === 'none' && answer !== 'ZL_HTTP_BAD_REQUEST';
    if (typeof answer === 'string') this.writeError(answer, keep, null);
    else if (!this.closed)
      this.send((answer.route.value.local as LocalReply).http1(head, keep, this.method !== 'HEAD'));
    if (!keep) {
      this.closeAfterWrite();
      return;
    }
    if (end < buf.length) this.stash(buf.subarray(end));
    this.nextRequest();
  }

  /** Request body bytes in `buf[start…)`; returns the offset after the body's last byte. */
  private feedBody(buf: Buffer, start: number): number {
    let stop: number;
    try {
      stop = this.body.feed(buf, start, this.exchange);
    } catch (err) {
      if (!isZiplineError(err)) throw err;
      this.badBody(err.code);
      return buf.length;
    }
    if (this.body.done) {
      this.reading = 'none';
      this.exchange?.bodyEnd();
    }
    return stop;
  }

  /** A chunked body malformed (400) or over max_body (413): that status if nothing was sent, else abort. */
  private badBody(code: ErrorCode): void {
    this.keepAlive = false;
    this.reading = 'none';
    this.body.reset();
    const ex = this.exchange;
    if (ex !== null) ex.fail(code);
    else this.socket.destroy();
  }

  /** A request that cannot be parsed: its coded status, then the connection is closed. */
  private reject(code: ErrorCode): void {
    const since = this.headStartedAt; // its line's response_time: how long the head took
    this.headStartedAt = 0;
    this.ahead.clear();
    this.reading = 'none';
    this.listener.localError(this, null, code, since);
    this.writeError(code, false, null);
    this.closeAfterWrite();
  }

  /**
   * The client sent FIN. By default (nginx `proxy_ignore_client_abort off`) a FIN during a request
   * means the client gave up: 499, the upstream request cancelled. `client_fin: finish` (HAProxy)
   * answers a request received in full and those pipelined before the FIN (`finish()`, or on 'drain');
   * only one cut short is 499. Between requests a FIN ends the connection. An RST that came with the
   * last bytes is an end in Node (reset-socket.ts): 499 in either mode.
   */
  private onEnd(): void {
    if (this.closed) return; // handed to HTTP/2, or already torn down
    this.clientEnded = true;
    const ex = this.exchange;
    const finishing = (ex?.bodyDone || this.awaitingDrain) && this.listener.settings.finishOnClientFin;
    if (finishing && !endedByReset(this.socket)) return;
    this.exchange = null;
    ex?.clientGone();
    if (ex !== null || finishing) this.socket.destroy();
    else if (this.upgraded === null) this.closeAfterWrite();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.ahead.clear();
    const ex = this.exchange;
    this.exchange = null;
    ex?.clientGone();
    // an upgraded connection stays the listener's (idle sweep, drain) until both sides closed
    if (this.upgraded === null) this.listener.onConnectionClosed(this);
  }

  // ---- Downstream -------------------------------------------------------------------------------

  sendContinue(): void {
    if (this.passesChunked && !this.closed) this.send(CONTINUE);
  }

  sendInterim(resp: ResponseHead): void {
    if (this.passesChunked && !this.closed) this.send(buildInterimHead(resp));
  }

  sendHead(ex: ProxyExchange, resp: ResponseHead, inline: Buffer | null): boolean {
    if (this.closed) return true;
    this.closeDelimited = resp.body === 'close' || (resp.body === 'chunked' && !this.passesChunked);
    this.responseKeepAlive =
      this.keepAlive && !this.closeDelimited && ex.bodyDone && !this.listener.draining();
    const head = buildClientHead(resp, {
      framing: this.closeDelimited ? 'close' : 'same',
      keepAlive: this.responseKeepAlive,
      clientMinor: this.passesChunked ? 1 : 0,
      rules: ex.route.response,
    });
    // a small body goes in the head's write; a streamed one's first bytes join it (held writes)
    this.send(inline === null ? head : head + inline.toString('latin1'));
    return true;
  }

  write(chunk: Buffer): boolean {
    if (this.closed) return true;
    // a copy (the chunk is a view of the upstream read buffer), as a string: V8 counts a Buffer
    // copy against the old generation's limit (full GCs), a string is young-generation garbage
    return this.send(chunk.toString('latin1'));
  }

  /** Every write to the client: held until the end of this event-loop turn (write-batch.ts). */
  private send(text: string): boolean {
    return writeText(this.socket, text, this.listener.directWrites);
  }

  finish(ex: ProxyExchange): void {
    if (this.exchange !== ex) return;
    this.exchange = null;
    if (this.closed) return;
    if (
      !this.responseKeepAlive ||
      this.reading === 'body' ||
      (this.clientEnded && !this.listener.settings.finishOnClientFin)
    ) {
      if (this.clientAskedClose && this.reading === 'none' && this.ahead.empty) this.closeWhenSent();
      else this.closeAfterWrite();
      return;
    }
    // after a FIN (client_fin: finish) this serves what was pipelined, then closes
    this.nextWhenTaken();
  }

  fail(ex: ProxyExchange, code: ErrorCode): void {
    if (this.exchange !== ex) return;
    this.exchange = null;
    if (this.closed) return;
    if (ex.headSent) {
      // mid-body: a truncated response never looks complete (plain: an RST, not the FIN ending a
      // close-delimited body; TLS: no close_notify); a client that took nothing is reset
      const plain = this.listener.protocol === 'http';
      abortWrites(this.socket, (this.closeDelimited && plain) || code === 'ZL_CLIENT_IDLE_TIMEOUT');
      return;
    }
    const keep =
      this.keepAlive && this.reading === 'none' && code !== 'ZL_HTTP_BAD_REQUEST' && !this.clientEnded;
    this.writeError(code, keep, ex.requestId);
    if (keep) this.nextWhenTaken();
    else this.closeAfterWrite();
  }

  spliceTarget(): Socket | null {
    if (this.closed || this.listener.protocol !== 'http') return null;
    releaseWrites(this.socket); // the head was held until the end of this turn
    return this.socket.writableLength === 0 ? this.socket : null;
  }

  pauseBody(): void {
    if (this.reading === 'body') this.socket.pause();
  }

  /** The upstream takes body bytes again (never past the read-ahead bound: read-ahead.ts). */
  resumeBody(): void {
    if (!this.closed && this.upgraded === null && !this.ahead.full) this.socket.resume();
  }

  upgrade(
    ex: ProxyExchange,
    up: UpstreamConnection,
    head: string,
    rest: Buffer,
    ended: UpgradeEnded,
  ): boolean {
    if (this.exchange !== ex || this.closed) return false;
    this.exchange = null;
    this.upgraded = new UpgradePump(this.socket, up, head, this.ahead.take(), rest, (i, o, code) => {
      ended(i, o, code);
      this.listener.onConnectionClosed(this);
    });
    return true;
  }

  // ---- helpers ----------------------------------------------------------------------------------

  /** The next request once the client took the responses so far (as nginx; else unbounded). */
  private nextWhenTaken(): void {
    if (this.socket.writableNeedDrain) this.awaitingDrain = true;
    else this.nextRequest();
  }

  private nextRequest(): void {
    this.reading = 'head';
    this.body.reset();
    if (this.socket.isPaused()) this.socket.resume();
    const p = this.ahead.take();
    if (p !== null) {
      this.parseHead(p);
      // after the client's FIN a head that is not complete never will be
      if (this.clientEnded && this.exchange === null && this.reading === 'head') this.closeAfterWrite();
    } else if (this.clientEnded) {
      this.closeAfterWrite();
    }
  }

  private writeError(code: ErrorCode, keepAlive: boolean, requestId: string | null): void {
    if (this.closed) return;
    this.send(errorResponse(code, { keepAlive, requestId, withBody: this.method !== 'HEAD' }));
  }

  /**
   * The client asked to close, its request read in full, nothing after it: plain HTTP closes once
   * the kernel has the response (as nginx; 93–100 → 84–87 µs per request). Where zipline chose to
   * close, bytes may be on their way (a close would reset); TLS has close_notify: they linger.
   */
  private closeWhenSent(): void {
    const plain = this.listener.protocol === 'http';
    if (plain) releaseWrites(this.socket); // the response was held until the end of this turn
    if (plain && this.socket.writableLength === 0) this.socket.destroy();
    else this.closeAfterWrite();
  }

  /** Ends the connection once what was written is flushed (FIN, then close). */
  private closeAfterWrite(): void {
    if (this.closed || this.socket.writableEnded) return;
    this.reading = 'none';
    this.ahead.clear();
    releaseWrites(this.socket); // what is held goes before the FIN
    this.socket.end().resume(); // FIN, then reads (dropped) until the client closes, or client_idle
  }

  /** Timeouts, from the listener's sweep. */
  tick(now: number): void {
    const s = this.listener.settings;
    if (this.upgraded !== null) return void this.upgraded.tick(now, s.clientIdleMs);
    if (this.closed) return;
    const ex = this.exchange;
    if (ex !== null) {
      ex.tick(now, s.clientIdleMs);
      return;
    }
    if (this.headStartedAt > 0) {
      if (now - this.headStartedAt >= s.clientHeaderMs) this.reject('ZL_HTTP_HEADER_TIMEOUT');
      return;
    }
    // activity: bytes the client takes (a slow reader of a backlog), or sends unless zipline closes
    const mark =
      (this.socket.writableEnded ? 0 : this.socket.bytesRead) + this.requests + this.socket.writableLength;
    if (mark !== this.idleMark) {
      this.idleMark = mark;
      this.idleAt = now;
      return;
    }
    // waiting for a request: the first within client_header, later ones within client_idle
    const limit = this.requests === 0 ? s.clientHeaderMs : keepAliveIdleMs(s, this.listener.draining());
    if (limit > 0 && now - this.idleAt >= limit) this.socket.destroy();
  }

  /** For /stats: what the connection is doing. */
  state(): string {
    if (this.upgraded !== null) return 'upgraded';
    if (this.exchange !== null) return `exchange:${this.exchange.state}`;
    if (this.awaitingDrain) return 'sending';
    if (this.headStartedAt > 0) return 'reading_head';
    if (this.socket.isPaused()) return 'paused';
    return this.reading === 'head' ? 'idle' : `reading_${this.reading}`;
  }

  /** Drain, `drain_idle: 0`: closed if between requests (else the sweep does it). A first request is awaited. */
  closeIfIdle(): void {
    const idle = this.exchange === null && this.upgraded === null && this.headStartedAt === 0;
    if (idle && this.requests > 0 && this.listener.settings.drainIdleMs === 0) this.closeAfterWrite();
  }

  /** Drain timeout: closed now, what is in flight ended with `ZL_DRAIN_TIMEOUT`. */
  destroy(): void {
    this.upgraded?.destroy('ZL_DRAIN_TIMEOUT');
    this.exchange?.clientGone('ZL_DRAIN_TIMEOUT'); // before the close's clientGone() (then a no-op)
    this.socket.destroy();
  }
}

function ignoreError(): void {}
