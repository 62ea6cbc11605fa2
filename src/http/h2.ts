/**
 * HTTP/2 for clients that negotiate `h2` by ALPN on an https listener, or open a plain http
 * connection with the HTTP/2 preface (h2c, prior knowledge). Node's `http2` does the
 * framing; each stream becomes an HTTP/1.1 request head (validated by the same strict parser),
 * runs through the same `Exchange` (routing, pool, retries, breaker) and its response is sent
 * back as HTTP/2. Upstreams are always spoken to in HTTP/1.1.
 *
 * Request bodies without a content-length are sent upstream chunked; responses are de-chunked
 * (HTTP/2 has its own framing). Hop-by-hop and connection-specific fields are dropped both ways
 * (RFC 9113 §8.2.2). The HTTP/1.1 raw path stays the fast path; this one favours reach.
 */

import { STATUS_CODES } from 'node:http';
import type {
  Http2Server,
  Http2Session,
  IncomingHttpHeaders,
  OutgoingHttpHeaders,
  ServerHttp2Stream,
} from 'node:http2';
import type { Socket } from 'node:net';
import { hash32 } from '../balancer/hash-fn.js';
import { listed } from '../config/address-list.js';
import { ERROR_CATALOG, type ErrorCode, isZiplineError, ZiplineError } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import { clientAddressOf } from '../proxy-protocol/reader.js';
import type { Upstream } from '../upstream/upstream.js';
import { admitRequest } from './admission.js';
import type { Downstream } from './downstream.js';
import type { HeaderRules } from './forward-head.js';
import { connectionNamed } from './forward-response.js';
import { resetStream } from './h2-reset.js';
import { CONNECTION_SPECIFIC, loadHttp2 } from './http2-module.js';
import type { HttpListener } from './listener.js';
import { LAST_CHUNK } from './parser/chunked.js';
import { MAX_FIELDS } from './parser/fields.js';
import { parseRequestHead, type RequestHead, requestHeadEnd } from './parser/request-head.js';
import type { ResponseHead } from './parser/response-head.js';
import { latin1, lowerAscii } from './parser/tokens.js';
import { createExchange, type ProxyExchange } from './proxy-exchange.js';
import { lastRetryAfter } from './rate-limit.js';

const DROP_REQUEST = new Set([...CONNECTION_SPECIFIC, 'host']);
const DROP_RESPONSE = new Set([...CONNECTION_SPECIFIC, 'trailer']);

/**
 * Streams a session must have opened before the reset check applies, and the share of them the
 * client may reset before their response ended (Envoy's premature-reset rule, CVE-2023-44487).
 */
const RESET_CHECK_AFTER = 100;
const RESET_SHARE = 0.5;
const kStreams = Symbol('zipline.h2.streams');
const noop = (): void => {};
const kResets = Symbol('zipline.h2.resets');
const kOpenedAt = Symbol('zipline.h2.openedAt');
type CountedSession = Http2Session & { [kStreams]: number; [kResets]: number; [kOpenedAt]: number };

export class H2Front {
  private readonly server: Http2Server;
  private readonly sessions = new Set<CountedSession>();
  readonly streams = new Set<H2Downstream>();

  constructor(private readonly listener: HttpListener) {
    this.server = loadHttp2().createServer({
      maxSessionMemory: 16,
      // a request head that HTTP/1.1 would take, or answer 431 for (over MAX_FIELDS fields), must
      // reach the same parser over h2: Node's default (128 fields) resets the stream instead
      maxHeaderListPairs: 2 * MAX_FIELDS,
      settings: { maxConcurrentStreams: 256 },
    });
    this.server.on('session', (session: Http2Session) => {
      const counted = session as CountedSession;
      counted[kStreams] = 0;
      counted[kResets] = 0;
      counted[kOpenedAt] = Date.now();
      // counted here, where the session is known: a stream whose RST came in the same read as its
      // HEADERS arrives destroyed, without its session
      session.on('stream', (stream: ServerHttp2Stream) => {
        // before anything else: a stream can arrive already destroyed by a session error (a flood
        // detected in the same read), and its 'error' comes next, with nobody else listening
        stream.on('error', noop);
        counted[kStreams]++;
        if (stream.destroyed) this.onClientReset(counted);
        else stream.once('aborted', () => this.onClientReset(counted));
      });
      this.sessions.add(counted);
      listener.trackSession(session);
      session.on('close', () => this.sessions.delete(counted));
      session.on('error', (err: NodeJS.ErrnoException) => this.onSessionError(session, err));
      const idle = listener.settings.clientIdleMs;
      if (idle > 0) session.setTimeout(idle, () => session.close());
    });
    this.server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
      // reset by the client before we saw it: nothing to serve, and no upstream request made
      if (stream.destroyed) return;
      new H2Downstream(this, listener, stream, headers).begin();
    });
  }

  /**
   * A stream the client reset before its response ended. A session that opens streams only to
   * reset them (the "rapid reset" flood) is ended: after 100 streams, more than half reset ends
   * it with GOAWAY ENHANCE_YOUR_CALM and closes the connection, instead of leaving it to
   * nghttp2's own rate limit, after which Node stops reading the socket and the session would
   * wait for `client_idle`.
   */
  private onClientReset(session: CountedSession): void {
    session[kResets]++;
    const streams = session[kStreams];
    if (streams < RESET_CHECK_AFTER || session[kResets] <= streams * RESET_SHARE || session.destroyed) return;
    metrics.httpErrors.labels(this.listener.name, 'ZL_HTTP2_RESET_FLOOD').inc();
    this.listener.ctx.log.warn(
      {
        listener: this.listener.name,
        client_ip: session.socket?.remoteAddress,
        streams,
        resets: session[kResets],
      },
      'HTTP/2 client reset most of its streams: connection closed (ZL_HTTP2_RESET_FLOOD)',
    );
    session.goaway(loadHttp2().constants.NGHTTP2_ENHANCE_YOUR_CALM);
    session.destroy();
  }

  /**
   * The session ends with an error: the client's socket failed (a reset: nothing to count here, its
   * streams end as client aborts), or nghttp2 found the client breaking the protocol or a flood
   * limit (`NghttpError`: its own SETTINGS/PING/empty-frame/CONTINUATION limits). Node destroys the
   * session at once either way; the second kind is counted as ZL_HTTP2_PROTOCOL.
   */
  private onSessionError(session: Http2Session, err: NodeJS.ErrnoException): void {
    if (err.code !== 'ERR_HTTP2_ERROR' && err.code !== 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES') return;
    metrics.httpErrors.labels(this.listener.name, 'ZL_HTTP2_PROTOCOL').inc();
    this.listener.ctx.log.debug(
      { listener: this.listener.name, client_ip: session.socket?.remoteAddress, reason: err.message },
      'HTTP/2 client broke the protocol: connection closed (ZL_HTTP2_PROTOCOL)',
    );
  }

  /** A TLS socket that chose `h2` by ALPN, or a plain one that opened with the preface (h2c). */
  accept(socket: Socket): void {
    // listener sockets allow half-open (HTTP/1.1 needs it); HTTP/2 has no use for it, and node:http2
    // ends a session only when its socket closes: a client's FIN would leave ours in CLOSE_WAIT
    socket.once('end', () => socket.end());
    socket.once('close', () => this.listener.countBytes(socket));
    this.server.emit('connection', socket);
  }

  sessionCount(): number {
    return this.sessions.size;
  }

  /**
   * Timeouts, from the listener's sweep: the streams' exchanges, and sessions that have opened no
   * stream within `client_header`, which are closed as an HTTP/1.1 connection without a request
   * is. This also ends a session nghttp2 has given up on: for a frame longer than the size limit,
   * nghttp2 sends GOAWAY FRAME_SIZE_ERROR and skips the frame's length, and Node stops reading the
   * socket without closing it or saying so (not even the client's FIN is seen); such a session
   * would otherwise wait for `client_idle`.
   */
  tick(now: number): void {
    const s = this.listener.settings;
    for (const stream of [...this.streams]) stream.exchange?.tick(now, s.clientIdleMs);
    if (s.clientHeaderMs === 0) return;
    for (const session of this.sessions) {
      if (session[kStreams] === 0 && now - session[kOpenedAt] >= s.clientHeaderMs) session.destroy();
    }
  }

  closeIdle(): void {
    for (const s of this.sessions) s.close(); // GOAWAY: open streams finish, no new ones
  }

  /** Drain timeout: what is in flight ends with `ZL_DRAIN_TIMEOUT`, then every session goes. */
  destroyAll(): void {
    for (const d of [...this.streams]) d.cut('ZL_DRAIN_TIMEOUT');
    for (const s of this.sessions) s.destroy();
  }
}

export class H2Downstream implements Downstream {
  readonly clientIp: string;
  readonly clientPort: number;
  readonly trusted: boolean;
  readonly clientHash: number;
  readonly httpVersion = '2';
  readonly passesChunked = false;
  exchange: ProxyExchange | null = null;
  private chunkedBody = false;
  private responded = false;
  /** The response ends with trailers, sent when its body has gone (`wantTrailers`). */
  private trailing = false;

  constructor(
    private readonly front: H2Front,
    private readonly listener: HttpListener,
    private readonly stream: ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
  ) {
    const socket = stream.session?.socket as Socket | undefined;
    const peer = socket === undefined ? { ip: '', port: 0 } : clientAddressOf(socket); // a PROXY header's, if any
    this.clientIp = peer.ip;
    this.clientPort = peer.port;
    const s = listener.settings;
    this.trusted = s.trustsAnyone && this.clientIp !== '' && listed(s.trusted, this.clientIp);
    this.clientHash = hash32(this.clientIp);
  }

  begin(): void {
    let head: RequestHead;
    try {
      head = this.requestHead();
    } catch (err) {
      if (!isZiplineError(err)) throw err;
      this.listener.localError(this, null, err.code);
      this.respondError(err.code, null);
      return;
    }
    const match = admitRequest(this.listener, head, this);
    if (typeof match === 'string') {
      this.listener.localError(this, head, match);
      this.respondError(match, null);
      return;
    }
    const local = match.route.value.local;
    if (local !== null) {
      this.listener.localAnswer(this, head, match);
      this.respond(local.h2(head), head.method === 'HEAD' ? '' : local.body);
      return;
    }
    const maxBody = match.route.value.maxBody;
    const upstream = this.listener.upstream(match.route.value.upstream) as Upstream;
    const ex = createExchange(this.listener, this, head, match, upstream);
    this.exchange = ex;
    this.front.streams.add(this);
    this.listener.onExchangeStart();
    const stream = this.stream;
    // A request without a body (END_STREAM on its HEADERS) is not read at all: once its readable
    // side has been consumed, Node destroys a stream as soon as nghttp2 closes it, which comes
    // before the callback of the response's last write, and that callback then builds an
    // ERR_STREAM_DESTROYED error (a full stack trace) for nobody: ~8 µs, an eighth of the CPU of
    // an HTTP/2 request. Unread (not even resumed: resumeBody), the stream is destroyed after its
    // writes have completed.
    if (!stream.endAfterHeaders) {
      let received = 0;
      stream.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > maxBody) ex.fail('ZL_HTTP_BODY_TOO_LARGE');
        else if (this.chunkedBody) {
          if (chunk.length === 0) return;
          ex.bodyChunk(Buffer.from(`${chunk.length.toString(16)}\r\n`, 'latin1'));
          ex.bodyChunk(chunk);
          ex.bodyChunk(CRLF);
        } else ex.bodyChunk(chunk);
      });
      stream.on('end', () => {
        // RST_STREAM NO_ERROR from the client (Node's `req.close()`) ends the stream as END_STREAM
        // does: a body cut short, never to reach the upstream as complete ('close' follows: 499)
        if (stream.aborted) return;
        if (this.chunkedBody) ex.bodyChunk(LAST_CHUNK);
        if (!ex.bodyDone) ex.bodyEnd();
      });
      // A reset stream's 'close' comes only once its readable side has ended, which one paused for
      // the upstream never does: the exchange hears of it now, and what the body still holds is dropped
      stream.once('aborted', () => {
        stream.removeAllListeners('data');
        stream.resume();
        this.clientLeft();
      });
    }
    stream.on('close', () => this.clientLeft());
    stream.on('drain', () => this.exchange?.onClientDrain());
    ex.start();
  }

  /** zipline closes the stream (drain timeout): the exchange ends with `code`, the upstream request cancelled. */
  cut(code: ErrorCode): void {
    const current = this.exchange;
    this.exchange = null;
    current?.clientGone(code);
  }

  /** The client reset or closed the stream before the exchange ended: 499, the upstream request cancelled. */
  private clientLeft(): void {
    this.front.streams.delete(this);
    const current = this.exchange;
    this.exchange = null;
    current?.clientGone();
  }

  /** The stream's request as an HTTP/1.1 head, parsed by the same strict parser as HTTP/1.1. */
  private requestHead(): RequestHead {
    const h = this.headers;
    const method = String(h[':method'] ?? '');
    const path = String(h[':path'] ?? '');
    const authority = String(h[':authority'] ?? h.host ?? '');
    if (method === 'CONNECT') {
      throw new ZiplineError('ZL_HTTP_NOT_IMPLEMENTED', 'CONNECT (a tunnel http_proxy entry serves it)');
    }
    if (path === '' || authority === '') {
      throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'HTTP/2 request without method, path or authority');
    }
    // RFC 9113 §8.3.1: a Host naming another authority makes the request malformed (as HAProxy);
    // routing by one and an origin reading the other would see two different requests
    const host = h.host;
    if (
      host !== undefined &&
      h[':authority'] !== undefined &&
      String(host).toLowerCase() !== authority.toLowerCase()
    ) {
      throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'HTTP/2 request whose host differs from its :authority');
    }
    let text = `${method} ${path} HTTP/1.1\r\nHost: ${authority}\r\n`;
    let hasLength = false;
    for (const [name, value] of Object.entries(h)) {
      if (name.startsWith(':') || DROP_REQUEST.has(name) || value === undefined) continue;
      if (name === 'content-length') hasLength = true;
      if (Array.isArray(value)) {
        text +=
          name === 'cookie'
            ? `cookie: ${value.join('; ')}\r\n`
            : value.map((v) => `${name}: ${v}\r\n`).join('');
      } else text += `${name}: ${value}\r\n`;
    }
    if (!this.stream.endAfterHeaders && !hasLength) {
      this.chunkedBody = true;
      text += 'transfer-encoding: chunked\r\n';
    }
    const buf = Buffer.from(`${text}\r\n`, 'latin1');
    const end = requestHeadEnd(buf, this.listener.settings.maxHeaderBytes);
    return parseRequestHead(buf, end);
  }

  sendContinue(): void {
    if (!this.stream.destroyed) this.stream.additionalHeaders({ ':status': 100 });
  }

  /** A 1xx head (103 Early Hints with its Link fields, 102) as HEADERS without END_STREAM. */
  sendInterim(resp: ResponseHead): void {
    if (this.stream.destroyed || resp.status === 100) return;
    const headers = headerList(resp, null);
    delete headers['content-length'];
    try {
      this.stream.additionalHeaders(headers);
    } catch {
      // advisory: an interim head HTTP/2 cannot carry is left out, the final one follows
    }
  }

  sendHead(ex: ProxyExchange, resp: ResponseHead, inline: Buffer | null): boolean {
    if (this.stream.destroyed) return true;
    const rules = ex.route.response;
    const headers = headerList(resp, rules);
    for (const [name, value] of rules.set) headers[name.toLowerCase()] = value;
    // chunked: HTTP/2 frames the body itself; 204: a Content-Length there is forbidden (RFC 9110
    // §8.6) and nghttp2 clients reset the stream over a non-zero one
    if (resp.body === 'chunked' || resp.status === 204) delete headers['content-length'];
    this.responded = true;
    // an HTTP/2 upstream's trailers (gRPC's status) end the stream once the body has gone
    const wait = ex.trailersExpected === true && resp.body !== 'none';
    const ended = resp.body === 'none' || (!wait && resp.body === 'length' && resp.contentLength === 0);
    try {
      this.stream.respond(headers, { endStream: ended, waitForTrailers: wait });
    } catch {
      // a head Node will not send (it checks more than HTTP/1.1 does): the exchange answers 502
      this.responded = false;
      return false;
    }
    this.trailing = wait;
    if (wait) this.stream.once('wantTrailers', () => this.sendTrailers(ex));
    if (inline !== null) this.stream.write(Buffer.from(inline)); // a copy: it views the upstream read buffer
    return true;
  }

  private sendTrailers(ex: ProxyExchange): void {
    if (this.stream.destroyed) return;
    try {
      this.stream.sendTrailers(ex.trailers ?? {});
      this.refuseRestOfBody();
    } catch {
      // trailers Node will not send (trailerFields keeps only what it takes): the stream is reset
      // rather than left waiting for an end that cannot come
      resetStream(this.stream);
    }
  }

  write(chunk: Buffer): boolean {
    if (this.stream.destroyed) return true;
    return this.stream.write(Buffer.from(chunk)); // a copy: `chunk` views the upstream read buffer
  }

  finish(ex: ProxyExchange): void {
    if (this.exchange !== ex) return;
    this.exchange = null;
    this.front.streams.delete(this);
    if (!this.stream.destroyed && !this.stream.writableEnded) this.stream.end();
    if (!this.trailing) this.refuseRestOfBody();
  }

  fail(ex: ProxyExchange, code: ErrorCode): void {
    if (this.exchange !== ex) return;
    this.exchange = null;
    this.front.streams.delete(this);
    if (ex.headSent || this.responded) {
      resetStream(this.stream); // never an END_STREAM first: the client would take it as complete
      return;
    }
    this.respondError(code, ex.requestId);
  }

  private respondError(code: ErrorCode, requestId: string | null): void {
    const status = ERROR_CATALOG[code].status || 500;
    const body = `${status} ${STATUS_CODES[status] ?? 'Error'} (${code})\n`;
    const headers: OutgoingHttpHeaders = {
      ':status': status,
      'content-type': 'text/plain; charset=utf-8',
      'x-zipline-error': code,
    };
    if (requestId !== null) headers['x-request-id'] = requestId;
    if (code === 'ZL_HTTP_RATE_LIMITED') headers['retry-after'] = String(lastRetryAfter());
    this.respond(headers, body);
  }

  /** zipline's own answer (an error, a route's redirect/respond); the request's body is not read. */
  private respond(headers: OutgoingHttpHeaders, body: string | Buffer): void {
    if (this.stream.destroyed || this.stream.closed) return;
    this.responded = true;
    this.stream.respond(headers);
    this.stream.end(body);
    this.refuseRestOfBody();
  }

  /**
   * The response is complete (or its trailers are on their way): a request body still coming is
   * not wanted. RST_STREAM NO_ERROR once the response is out (RFC 9113 §8.1; Node sends it after
   * the stream's last write), as nginx does; a client that waits for its upload to end before it
   * ends the stream (Node's own client, grpc-js) would otherwise wait for ever, zipline no longer
   * reading it.
   */
  private refuseRestOfBody(): void {
    if (this.stream.destroyed || this.stream.endAfterHeaders || this.stream.readableEnded) return;
    // closed with NO_ERROR, Node destroys a stream only once its readable side has ended: one left
    // paused (the body was held for the upstream) would never close, nor let its session close
    if (this.stream.isPaused()) this.stream.resume();
    this.stream.close(loadHttp2().constants.NGHTTP2_NO_ERROR);
  }

  pauseBody(): void {
    this.stream.pause();
  }

  resumeBody(): void {
    // a request without a body stays unread (see begin)
    if (!this.stream.destroyed && !this.stream.endAfterHeaders) this.stream.resume();
  }

  spliceTarget(): null {
    return null;
  }

  upgrade(): boolean {
    return false;
  }
}

const CRLF = Buffer.from('\r\n', 'latin1');

/**
 * An upstream head's fields as an HTTP/2 header list: names lower case, connection-specific ones
 * (and those its Connection names, and `rules.remove`'s) left out, repeats joined with ", " but
 * Set-Cookie's kept apart.
 */
function headerList(resp: ResponseHead, rules: HeaderRules | null): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = { ':status': resp.status };
  const named = connectionNamed(resp);
  for (let f = 0; f < resp.fieldCount; f++) {
    const k = f * 4;
    const name = lowerAscii(resp.raw, resp.fields[k] as number, resp.fields[k + 1] as number);
    if (DROP_RESPONSE.has(name) || rules?.remove.has(name) === true || named?.has(name) === true) continue;
    const value = latin1(resp.raw, resp.fields[k + 2] as number, resp.fields[k + 3] as number);
    const prev = headers[name];
    if (prev === undefined) headers[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else if (name === 'set-cookie') headers[name] = [String(prev), value];
    else headers[name] = `${String(prev)}, ${value}`;
  }
  return headers;
}
