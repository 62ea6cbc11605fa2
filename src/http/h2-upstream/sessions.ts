/**
 * HTTP/2 connections to the servers of an upstream with `http_version: 2` (Envoy's HTTP/2
 * clusters, Caddy `versions 2`): a session per server, shared by every request to it, each
 * request a stream. h2c with prior knowledge without `tls`; with it, TLS offering ALPN `h2` only
 * (a server that does not select it fails the connect as `ZL_UPSTREAM_TLS`).
 *
 * A session with as many streams open as the server's SETTINGS_MAX_CONCURRENT_STREAMS allows
 * takes no more: the next request goes on another session to that server, opened if none has
 * room (as Envoy and Go's transport do), so long-lived streams (gRPC watches) never wait behind a
 * full connection. Requests asking while a server's session is being opened wait for that
 * connect and the server's first SETTINGS (bounded by `timeouts.connect`, the TLS handshake
 * included); as many as it has room for go on it, and the rest on the next one opened (a server
 * that allows 0 streams is waited out: they queue in nghttp2). A session that received GOAWAY,
 * failed, or has started `keepalive.max_requests` streams takes no new ones; those in flight
 * finish, and it is closed once they have. A session without streams for
 * `keepalive.idle_timeout` is closed.
 */
import type { ClientHttp2Session, ClientHttp2Stream, OutgoingHttpHeaders } from 'node:http2';
import { connect as connectTcp, type Socket } from 'node:net';
import { connect as connectTls, type TLSSocket } from 'node:tls';
import { nowMs } from '../../core/clock.js';
import { type ErrorCode, upstreamConnectCode } from '../../errors.js';
import { metrics } from '../../metrics/catalog.js';
import type { Endpoint } from '../../upstream/endpoint.js';
import type { OriginTls } from '../../upstream/origin-tls.js';
import type { Upstream } from '../../upstream/upstream.js';
import { loadHttp2 } from '../http2-module.js';
import { idleSweepTimer } from '../idle-sweep.js';

export type SessionCallback = (session: H2Session | null, code: ErrorCode | null) => void;

/** Request fields the server may send per stream (as many as HTTP/1.1 heads may carry, ×2). */
const MAX_HEADER_PAIRS = 400;
export class H2Session {
  /** Streams open on it now, and started over its life. */
  streams = 0;
  started = 0;
  /** Takes no new streams (GOAWAY received, failed, or at `max_requests`). */
  closing = false;
  idleSince = nowMs();

  constructor(
    readonly session: ClientHttp2Session,
    readonly endpoint: Endpoint,
    /** The upstream's TLS settings it was opened with (a reload may bring new ones). */
    readonly tls: OriginTls | null,
  ) {}

  /** As many streams open as the server allows (an advertised 0 is waited out, not counted). */
  full(): boolean {
    const max = this.session.remoteSettings?.maxConcurrentStreams;
    return max !== undefined && max > 0 && this.streams >= max;
  }

  /** A stream for one request (throws what `ClientHttp2Session.request` throws). */
  request(headers: OutgoingHttpHeaders, endStream: boolean): ClientHttp2Stream {
    const stream = this.session.request(headers, { endStream });
    this.streams++;
    this.started++;
    stream.once('close', () => {
      this.streams--;
      if (this.streams > 0) return;
      this.idleSince = nowMs();
      if (this.closing) this.session.close();
    });
    return stream;
  }

  /**
   * It takes no new streams and closes once those in flight end: after GOAWAY, `max_requests`
   * or an idle time, and when a stream on it got no answer in time (the connection may be dead
   * without either side knowing: the next request opens a new one, which fails fast if the
   * server is gone).
   */
  drain(): void {
    this.closing = true;
    if (this.streams === 0 && !this.session.destroyed) this.session.close();
  }
}

export class H2Sessions {
  /** The sessions taking new streams, per server. */
  private readonly ready = new Map<Endpoint, H2Session[]>();
  /** Every session not closed yet: the pooled ones and those finishing their streams. */
  private readonly live = new Set<H2Session>();
  private readonly waiting = new Map<Endpoint, SessionCallback[]>();
  private closed = false;
  private sweepTimer: NodeJS.Timeout | null = null;
  /** Sessions opened over the pool's life, and requests that went on one already in use. */
  opened = 0;
  reusedRequests = 0;

  constructor(private readonly upstream: Upstream) {}

  /**
   * A session to `e` able to take a stream, now or once connected; `cb` gets it or the connect's
   * error code. The returned function withdraws `cb` (the connect goes on for the others).
   */
  session(e: Endpoint, cb: SessionCallback): () => void {
    const current = this.withRoom(e);
    if (current !== null) {
      this.reusedRequests++;
      cb(current, null);
      return noop;
    }
    let list = this.waiting.get(e);
    if (list === undefined) {
      list = [];
      this.waiting.set(e, list);
      this.open(e);
    }
    list.push(cb);
    return () => {
      const i = list.indexOf(cb);
      if (i >= 0) list.splice(i, 1);
    };
  }

  /** Sessions taking new streams now (for `/stats`). */
  get size(): number {
    let n = 0;
    for (const list of this.ready.values()) n += list.length;
    return n;
  }

  /** The upstream is gone (a reload removed it, or shutdown): every session ends now. */
  close(): void {
    this.closed = true;
    for (const s of this.live) s.session.destroy();
    this.live.clear();
    this.ready.clear();
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
  }

  /** A session to `e` able to take one more stream now, if any (retiring those that never will). */
  private withRoom(e: Endpoint): H2Session | null {
    const list = this.ready.get(e);
    if (list === undefined) return null;
    for (let i = 0; i < list.length; ) {
      const s = list[i] as H2Session;
      if (!this.usable(s)) {
        if (list[i] === s) i++; // (retired: out of the list, the next one is at i)
        continue;
      }
      if (!s.full()) return s;
      i++;
    }
    return null;
  }

  private usable(s: H2Session): boolean {
    const settings = this.upstream.settings;
    const ok =
      !s.closing &&
      !s.session.destroyed &&
      !s.session.closed &&
      s.tls === settings.tls &&
      s.started < settings.keepaliveMaxRequests;
    if (!ok) this.retire(s);
    return ok;
  }

  /** Out of the pool: no new streams on `s`, and it closes once those in flight ended. */
  private retire(s: H2Session): void {
    s.drain();
    this.unlist(s);
  }

  private unlist(s: H2Session): void {
    const list = this.ready.get(s.endpoint);
    const i = list?.indexOf(s) ?? -1;
    if (list === undefined || i < 0) return;
    list.splice(i, 1);
    if (list.length === 0) this.ready.delete(s.endpoint);
  }

  private open(e: Endpoint): void {
    const settings = this.upstream.settings;
    const tls = settings.tls;
    const started = performance.now();
    const socket: Socket =
      tls === null
        ? connectTcp({ host: e.ip, port: e.port, noDelay: true })
        : connectTls({ ...tls.connectOptions(e), ALPNProtocols: ['h2'] });
    if (tls !== null) socket.on('session', (ticket: Buffer) => tls.remember(e, ticket));
    let done = false;
    const finish = (session: H2Session | null, code: ErrorCode | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const list = this.waiting.get(e) ?? [];
      this.waiting.delete(e);
      if (session === null || session.closing || session.session.destroyed) {
        // the connect failed, or the session died at once (a GOAWAY, bytes that are not HTTP/2)
        for (const cb of list.splice(0)) cb(null, code ?? 'ZL_UPSTREAM_RESET');
        return;
      }
      this.pool(session);
      // as many as it has room for (the server's stream limit, `max_requests`; the first opened
      // it); the rest wait for another (the same array: their withdrawals still find them)
      for (let first = true; list.length > 0 && this.usable(session) && !session.full(); first = false) {
        if (!first) this.reusedRequests++;
        (list.shift() as SessionCallback)(session, null);
      }
      if (list.length > 0) {
        this.waiting.set(e, list);
        this.open(e);
      }
    };
    const fail = (code: ErrorCode): void => {
      socket.on('error', noop);
      socket.destroy();
      finish(null, code);
    };
    const timer = setTimeout(fail, settings.connectTimeoutMs, 'ZL_UPSTREAM_CONNECT_TIMEOUT');
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const code = upstreamConnectCode(err, tls !== null);
      if (code === 'ZL_UPSTREAM_TLS') this.upstream.tlsFailed(e, err);
      fail(code);
    });
    socket.once(tls === null ? 'connect' : 'secureConnect', () => {
      if (tls !== null && (socket as TLSSocket).alpnProtocol !== 'h2') {
        this.upstream.tlsFailed(e, new Error('the server did not select ALPN h2 (http_version: 2)'));
        fail('ZL_UPSTREAM_TLS');
        return;
      }
      if (this.closed) {
        fail('ZL_UPSTREAM_RESET');
        return;
      }
      socket.removeAllListeners('error');
      const s = this.adopt(e, socket, tls);
      // the server's SETTINGS first: its stream limit says how many of the waiting requests it takes
      let broken = false;
      s.session.once('error', () => {
        broken = true;
      });
      s.session.once('remoteSettings', () => {
        metrics.upstreamConnectDuration
          .labels(this.upstream.name)
          .observe((performance.now() - started) / 1000);
        this.opened++;
        finish(s, null);
      });
      s.session.once('close', () => finish(null, broken ? 'ZL_UPSTREAM_BAD_RESPONSE' : 'ZL_UPSTREAM_RESET'));
    });
  }

  /** The HTTP/2 session over a connected socket (pooled once the server's SETTINGS came). */
  private adopt(e: Endpoint, socket: Socket, tls: OriginTls | null): H2Session {
    const session = loadHttp2().connect(`${tls === null ? 'http' : 'https'}://${e.address}`, {
      createConnection: () => socket,
      settings: { enablePush: false },
      maxHeaderListPairs: MAX_HEADER_PAIRS,
      maxSessionMemory: 16,
    });
    const s = new H2Session(session, e, tls);
    // its streams hear about a failure (each ends with its code); the session only leaves the pool
    session.on('error', noop);
    session.on('goaway', () => this.retire(s));
    session.once('close', () => {
      s.closing = true;
      this.live.delete(s);
      this.unlist(s);
    });
    this.live.add(s);
    return s;
  }

  /** `s` takes new streams to its server from now on. */
  private pool(s: H2Session): void {
    const list = this.ready.get(s.endpoint);
    if (list === undefined) this.ready.set(s.endpoint, [s]);
    else list.push(s);
    this.scheduleSweep();
  }

  private scheduleSweep(): void {
    if (this.sweepTimer !== null) return;
    this.sweepTimer = idleSweepTimer(this.upstream.settings.keepaliveIdleTimeoutMs, () => this.sweep());
  }

  private sweep(): void {
    const now = nowMs();
    const limit = this.upstream.settings.keepaliveIdleTimeoutMs;
    for (const list of [...this.ready.values()]) {
      for (const s of [...list]) if (s.streams === 0 && now - s.idleSince >= limit) this.retire(s);
    }
    if (this.ready.size === 0 && this.sweepTimer !== null) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = null;
    }
  }
}

function noop(): void {}
