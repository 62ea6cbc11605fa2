/**
 * The `/shm` HTTP API (docs/SHM.md) for the bridges that share one `http` address. Off the proxy's
 * hot path, so plain `node:http`. Every handler is bounded: reads and writes of the segment never
 * block the event loop beyond the library's ~2 ms lock spin.
 *
 *   GET  /shm/NAME            latest snapshot; ETag "V-TAG" (etag.ts); If-None-Match → 304; 204
 *                             before the first write; ?since=V&timeout=MS long-polls while V is current
 *   POST /shm/NAME (or PUT)   replace it; If-Match "V-TAG" or "V" → compare-and-set (412); 413 over
 *                             capacity; 503 + Retry-After when a live writer holds the lock
 *   GET  /shm/NAME/stream     Server-Sent Events: each new version (id = V-TAG)
 *   GET  /shm/NAME/messages   Server-Sent Events of C → Node messages (id = SEQ-TAG; Last-Event-ID,
 *                             or ?from=SEQ without one, replays what is still kept, else a `gap` event)
 *   POST /shm/NAME/messages   one message to C
 *   GET  /shm/NAME/stats      layout, versions, lock owner, ring positions, peers
 * `/shm` alone names the bridge when only one is served here.
 */

import {
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { Socket } from 'node:net';
import { isLoopback } from '../admin/auth.js';
import { answerClientError } from '../admin/client-error.js';
import { armSendTimeout } from '../admin/send-timeout.js';
import { formatHostPort, parseHostPort } from '../config/units.js';
import { ERROR_CATALOG, type ErrorCode, isZiplineError, ZiplineError } from '../errors.js';
import { bindFailure } from '../l4/bind-failure.js';
import type { Logger } from '../log/logger.js';
import { OverLimit } from '../log/over-limit.js';
import { metrics } from '../metrics/catalog.js';
import type { ShmBridge, ShmMessage } from './bridge.js';
import { etagOf, eventId, ifMatchVersion, noneMatch, parseRef } from './etag.js';
import { readUpload } from './upload.js';

const MAX_LONG_POLL_MS = 60_000;
const SSE_HEARTBEAT_MS = 15_000;

export class ShmHttpServer {
  private server: Server | null = null;
  private readonly streams = new Set<ServerResponse>();

  constructor(
    readonly listen: string,
    private readonly bridges: Map<string, ShmBridge>,
    private readonly log: Logger,
    /** The largest `max_connections` of the bridges on this address. */
    private readonly maxConnections: number,
  ) {}

  async start(): Promise<void> {
    const hp = parseHostPort(this.listen, '127.0.0.1');
    if (hp === undefined) throw new ZiplineError('ZL_LISTEN_FAILED', `bad shm http address ${this.listen}`);
    const server = createServer(
      // Node enforces the two timeouts when it sweeps its connections: each second, not every 30
      { requestTimeout: 120_000, headersTimeout: 10_000, connectionsCheckingInterval: 1_000 },
      (req, res) => {
        armSendTimeout(req, res, 'shm.http', 'ZL_SHM_SEND_TIMEOUT');
        this.handle(req, res).catch((err: unknown) => this.error(res, err));
      },
    );
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) =>
      answerClientError(err, socket, 'shm.http', 'ZL_SHM_BAD_REQUEST', 'ZL_SHM_REQUEST_TIMEOUT'),
    );
    // net.Server closes a connection over its maxConnections as it is accepted, then says 'drop'
    server.maxConnections = this.maxConnections;
    const overLimit = new OverLimit('shm.http', this.log, () => this.maxConnections, 'shm[].max_connections');
    server.on('drop', () => overLimit.refused());
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new ZiplineError(
            'ZL_LISTEN_FAILED',
            `shm http: cannot listen on ${this.listen}: ${bindFailure(err, this.listen)}`,
          ),
        ),
      );
      server.listen({ host: hp.host, port: hp.port }, () => resolve());
    });
    server.removeAllListeners('error');
    server.on('error', (err) => this.log.error({ err }, 'shm http server error'));
    this.server = server;
    const bound = server.address();
    if (bound !== null && typeof bound === 'object' && !isLoopback(bound.address)) {
      this.log.warn(
        { http: this.listen },
        'shm HTTP API reachable beyond this host: it has no authentication, anyone who can connect can read and write the segment',
      );
    }
  }

  address(): string {
    const a = this.server?.address();
    return a !== null && typeof a === 'object' && a !== undefined ? formatHostPort(a.address, a.port) : '';
  }

  close(): Promise<void> {
    for (const res of this.streams) res.destroy();
    this.streams.clear();
    return new Promise((resolve) => {
      if (this.server === null) return resolve();
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }

  private bridgeFor(name: string | undefined): ShmBridge {
    if (name === undefined || name === '') {
      if (this.bridges.size === 1) return [...this.bridges.values()][0] as ShmBridge;
      throw new ZiplineError(
        'ZL_SHM_NOT_FOUND',
        `several bridges are served here: use /shm/NAME (${[...this.bridges.keys()].join(', ')})`,
      );
    }
    const b = this.bridges.get(name);
    if (b === undefined) throw new ZiplineError('ZL_SHM_NOT_FOUND', `no shm bridge "${name}"`);
    return b;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/shm(?:\/([A-Za-z0-9_.-]+))?(?:\/(stream|messages|stats))?\/?$/.exec(url.pathname);
    if (m === null) throw new ZiplineError('ZL_SHM_NOT_FOUND', 'not an /shm path');
    // /shm/stats with one bridge: "stats" is the sub-resource, not a bridge name
    let name = m[1];
    let sub = m[2];
    if (
      sub === undefined &&
      name !== undefined &&
      ['stream', 'messages', 'stats'].includes(name) &&
      !this.bridges.has(name)
    ) {
      sub = name;
      name = undefined;
    }
    const bridge = this.bridgeFor(name);
    const method = req.method ?? 'GET';
    if (sub === undefined && (method === 'GET' || method === 'HEAD')) return this.get(bridge, req, res, url);
    if (sub === undefined && (method === 'POST' || method === 'PUT')) return this.put(bridge, req, res);
    if (sub === 'stream' && method === 'GET') return this.stream(bridge, req, res);
    if (sub === 'messages' && method === 'GET') return this.messages(bridge, req, res, url);
    if (sub === 'messages' && method === 'POST') {
      const upload = await readUpload(req, bridge.settings.slotSize - 16, bridge.uploads);
      try {
        bridge.send(upload.data);
      } finally {
        upload.release();
      }
      res.writeHead(202).end();
      return;
    }
    if (sub === 'stats' && method === 'GET') {
      json(res, 200, bridge.stats());
      return;
    }
    res.writeHead(405, { Allow: 'GET, POST, PUT' }).end();
  }

  private async get(bridge: ShmBridge, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const since = url.searchParams.get('since');
    const ref = since === null ? null : parseRef(since);
    if (ref !== null) {
      const timeout = Math.min(Number(url.searchParams.get('timeout') ?? '30000') || 0, MAX_LONG_POLL_MS);
      // waits while the client has the latest: a version of another segment (before a peer
      // replaced it) is answered at once, as is a bare number that is not the current one
      const current =
        ref.tag === null ? ref.n === bridge.version : ref.tag === bridge.tag && ref.n >= bridge.version;
      if (current && timeout > 0) await waitForVersion(bridge, ref.n, timeout, req);
    }
    const snap = bridge.read();
    if (snap === null) {
      res.writeHead(204).end();
      return;
    }
    const etag = etagOf(snap.version, bridge.tag);
    if (noneMatch(req.headers['if-none-match'], etag)) {
      res.writeHead(304, { ETag: etag }).end();
      return;
    }
    res.writeHead(200, {
      ETag: etag,
      'Content-Type': 'application/octet-stream',
      'Content-Length': snap.data.length,
      'Cache-Control': 'no-cache',
    });
    res.end(req.method === 'HEAD' ? undefined : snap.data);
  }

  private async put(bridge: ShmBridge, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const expected = ifMatchVersion(req.headers['if-match'], bridge.tag);
    const upload = await readUpload(req, bridge.settings.snapshotCapacity, bridge.uploads);
    let version: number;
    try {
      version = bridge.write(upload.data, expected);
    } finally {
      upload.release();
    }
    res.writeHead(200, { ETag: etagOf(version, bridge.tag), 'Content-Type': 'application/json' });
    res.end(`{"version":${version}}\n`);
  }

  /**
   * Each new version; a subscriber that does not keep up (its response buffer full) gets the latest
   * version once it has taken what was sent, not every one in between: before, each was queued for
   * it, without bound.
   */
  private stream(bridge: ShmBridge, req: IncomingMessage, res: ServerResponse): void {
    this.openSse(bridge, req, res);
    let missed = false;
    // the version last sent: a wake-up for a version it already has sends nothing (the same number
    // in a segment that replaced the old one is another version: etag.ts)
    let sent = '';
    const send = (): void => {
      if (res.writableNeedDrain) {
        missed = true;
        return;
      }
      let snap: ReturnType<ShmBridge['read']>;
      try {
        snap = bridge.read();
      } catch {
        return; // busy or malformed (counted): this subscriber gets the next version that reads
      }
      if (snap === null) return;
      const id = eventId(snap.version, bridge.tag);
      if (id === sent) return;
      sent = id;
      res.write(`id: ${id}\nevent: snapshot\n${dataLines(snap.data)}\n`);
    };
    res.on('drain', () => {
      if (missed) {
        missed = false;
        send();
      }
    });
    send();
    const off = bridge.onSnapshot(send);
    req.on('close', () => {
      off();
      this.streams.delete(res);
    });
  }

  /**
   * C → Node messages. A subscriber that does not keep up (its response buffer full) is sent
   * nothing more until it has taken what was sent; then it catches up as a reconnect with
   * Last-Event-ID would: the messages still kept, and a `gap` event for those that are not.
   * Before, every message was queued for it, without bound.
   */
  private messages(bridge: ShmBridge, req: IncomingMessage, res: ServerResponse, url: URL): void {
    const start = url.searchParams.get('from');
    if (start !== null && !/^\d{1,15}$/.test(start))
      throw new ZiplineError('ZL_SHM_BAD_REQUEST', '?from must be a message sequence number (0: all kept)');
    this.openSse(bridge, req, res);
    let next = 0; // the sequence this subscriber expects next
    let of = bridge.tag; // in this segment (a peer may replace it: etag.ts)
    let behind = false;
    const write = (m: ShmMessage): void => {
      res.write(`id: ${eventId(m.seq, bridge.tag)}\nevent: message\n${dataLines(m.data)}\n`);
      next = m.seq + 1;
      of = bridge.tag;
    };
    const catchUp = (from: number): void => {
      const kept = bridge.recentMessages();
      const oldest = kept[0]?.seq;
      if (oldest !== undefined && oldest > from) {
        res.write(`event: gap\ndata: {"from":${from},"to":${oldest - 1}}\n\n`);
      }
      // as far as the response takes without queueing (the next 'drain' goes on from `next`):
      // all the kept messages at once (the ring's slots, 200+ KB) could wait in memory
      for (const m of kept) {
        if (m.seq < from) continue;
        write(m);
        if (res.writableNeedDrain) break;
      }
      behind = res.writableNeedDrain;
    };
    const send = (m: ShmMessage): void => {
      if (behind) return;
      write(m);
      behind = res.writableNeedDrain;
    };
    res.on('drain', () => {
      if (behind) catchUp(of === bridge.tag ? next : 0);
    });
    const last = req.headers['last-event-id'];
    const ref = typeof last === 'string' ? parseRef(last) : null;
    if (ref !== null) {
      // an id of another segment (or, bare, one this segment has not reached): all it kept
      const elsewhere = ref.tag === null ? ref.n >= bridge.nextSeq() : ref.tag !== bridge.tag;
      catchUp(elsewhere ? 0 : ref.n + 1);
    } else if (start !== null) {
      // a first subscriber's start (0: all that is kept); an EventSource that reconnects sends
      // Last-Event-ID with the same URL, and that one wins, so it is not replayed from here again
      catchUp(Number(start));
    }
    const off = bridge.onMessage(send);
    req.on('close', () => {
      off();
      this.streams.delete(res);
    });
  }

  /** The response head of a stream, after which it follows `bridge` until the client or the segment goes. */
  private openSse(bridge: ShmBridge, req: IncomingMessage, res: ServerResponse): void {
    bridge.assertUsable(); // a lost segment: 502 now, not a stream that never says anything
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
    });
    res.write(': zipline shm\n\n');
    this.streams.add(res);
    const beat = setInterval(() => res.write(': keep-alive\n\n'), SSE_HEARTBEAT_MS);
    beat.unref();
    res.on('close', () => clearInterval(beat));
    const offLost = bridge.onLost(() => {
      res.end(
        'event: error\ndata: {"error":"ZL_SHM_CORRUPT","message":"the segment was truncated under zipline"}\n\n',
      );
    });
    req.on('close', offLost);
  }

  private error(res: ServerResponse, err: unknown): void {
    if (isZiplineError(err) && err.code === 'ZL_CLIENT_ABORTED') {
      // nobody to answer: counted beside the API's other client errors
      metrics.connectionErrors.labels('shm.http', err.code).inc();
      res.destroy();
      return;
    }
    let code: ErrorCode = 'ZL_INTERNAL';
    let message = 'internal error';
    if (isZiplineError(err)) {
      code = err.code;
      message = err.message;
    } else this.log.error({ err }, 'shm http handler failed');
    const status = ERROR_CATALOG[code].status || 500;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const headers: Record<string, string> = { 'X-Zipline-Error': code };
    if (status === 503) headers['Retry-After'] = '1';
    json(res, status, { error: code, message, status: STATUS_CODES[status] }, headers);
  }
}

function json(
  res: ServerResponse,
  status: number,
  value: unknown,
  headers: Record<string, string> = {},
): void {
  const text = `${JSON.stringify(value)}\n`;
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/** SSE `data:` lines (one per line of the payload, as text). */
function dataLines(data: Buffer): string {
  return `${data
    .toString('utf8')
    .split(/\r?\n/)
    .map((l) => `data: ${l}`)
    .join('\n')}\n`;
}

function waitForVersion(
  bridge: ShmBridge,
  after: number,
  timeoutMs: number,
  req: IncomingMessage,
): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      off();
      clearTimeout(timer);
      req.off('close', done);
      resolve();
    };
    const tag = bridge.tag;
    const off = bridge.onSnapshot(() => {
      if (bridge.version > after || bridge.tag !== tag) done();
    });
    const timer = setTimeout(done, timeoutMs);
    req.on('close', done);
  });
}
