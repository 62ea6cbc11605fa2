/**
 * The admin server: loopback by default, optional bearer token (all endpoints but `/healthz`).
 *
 *   GET  /healthz                 200 while the process serves
 *   GET  /readyz                  200 when every listener is bound and every upstream has a healthy server
 *   GET  /stats                   JSON: listeners, upstreams (per server), tunnel, shm
 *   GET  /metrics                 Prometheus text
 *   POST /reload                  as SIGHUP; 200 with what changed, 422 with why it was refused
 *   POST /upgrade                 as SIGUSR2; 200 once the new process serves, 409 refused, 500 failed
 *   GET  /debug/profile?seconds=N a .cpuprofile (1–60 s); with workers, `&worker=I|primary` (default 0)
 *   GET  /                        a small live dashboard
 *
 * Malformed requests get a 400 from the HTTP parser's `clientError` hook (a timed-out one a 408),
 * never a crash.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { ValidConfig } from '../config/schema.js';
import { formatHostPort, parseHostPort } from '../config/units.js';
import { inherited } from '../core/handover.js';
import type { Runtime } from '../core/runtime.js';
import { type ErrorCode, isZiplineError, ZiplineError } from '../errors.js';
import { bindFailure } from '../l4/bind-failure.js';
import { offerServer } from '../l4/listen.js';
import { OverLimit } from '../log/over-limit.js';
import { METRICS_CONTENT_TYPE } from '../metrics/catalog.js';
import { controlRefused, exposureWarning, tokenMatches } from './auth.js';
import { answerClientError } from './client-error.js';
import { DASHBOARD_HTML } from './dashboard.js';
import { armSendTimeout } from './send-timeout.js';

export class AdminServer {
  private server: Server | null = null;
  /** `admin.max_connections` now (set by `start`, a reload by `setMaxConnections`). */
  private limit = 0;
  private readonly overLimit: OverLimit;

  constructor(private readonly runtime: Runtime) {
    this.overLimit = new OverLimit('admin', runtime.log, () => this.limit, 'admin.max_connections');
  }

  /** `cfg.token`: the admin token this address will be served with ('' = none). */
  async start(cfg: ValidConfig['admin']): Promise<void> {
    const { listen, token, max_connections: maxConnections } = cfg;
    const hp = parseHostPort(listen, '127.0.0.1');
    if (hp === undefined) throw new ZiplineError('ZL_LISTEN_FAILED', `bad admin address ${listen}`);
    const server = createServer(
      {
        requestTimeout: 70_000,
        headersTimeout: 10_000,
        keepAliveTimeout: 5_000,
        // Node enforces the two timeouts above when it sweeps its connections (every 30 s by
        // default): a client that sent nothing would be kept up to 40 s instead of 10
        connectionsCheckingInterval: 1_000,
      },
      (req, res) => {
        armSendTimeout(req, res, 'admin', 'ZL_ADMIN_SEND_TIMEOUT');
        this.handle(req, res).catch((err: unknown) => {
          if (isZiplineError(err)) {
            sendError(res, err.code, err.message);
            return;
          }
          this.runtime.log.error({ err }, 'admin handler failed');
          sendError(res, 'ZL_INTERNAL', 'internal error');
        });
      },
    );
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) =>
      answerClientError(err, socket, 'admin', 'ZL_ADMIN_BAD_REQUEST', 'ZL_ADMIN_REQUEST_TIMEOUT'),
    );
    // net.Server closes a connection over its maxConnections as it is accepted, then says 'drop'
    this.limit = maxConnections;
    server.maxConnections = maxConnections;
    server.on('drop', () => this.overLimit.refused());
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new ZiplineError(
            'ZL_LISTEN_FAILED',
            `admin: cannot listen on ${listen}: ${bindFailure(err, listen)}`,
          ),
        ),
      );
      // an upgrade handed this process the old one's admin socket (core/handover.ts)
      const handed = inherited('tcp', 'admin', listen);
      server.listen(handed ? { fd: handed.fd } : { host: hp.host, port: hp.port }, () => resolve());
    });
    offerServer(server, 'admin', listen);
    server.removeAllListeners('error');
    server.on('error', (err) => this.runtime.log.error({ err }, 'admin server error'));
    this.server = server;
    this.runtime.log.info({ url: this.url() }, 'admin listening');
    this.warnIfExposed(token);
  }

  /** Logs a warning when this address is reachable beyond loopback and `token` is empty. */
  warnIfExposed(token: string): void {
    const bound = this.server?.address();
    const exposed =
      bound !== null && typeof bound === 'object' ? exposureWarning(bound.address, token) : null;
    if (exposed !== null) this.runtime.log.warn({ url: this.url() }, exposed);
  }

  url(): string {
    const a = this.server?.address();
    return a !== null && typeof a === 'object' ? `http://${formatHostPort(a.address, a.port)}/` : '';
  }

  async rebind(cfg: ValidConfig['admin']): Promise<void> {
    await this.close();
    await this.start(cfg);
  }

  /** A reload's `admin.max_connections`: for connections from now on. */
  setMaxConnections(n: number): void {
    this.limit = n;
    if (this.server !== null) this.server.maxConnections = n;
  }

  /**
   * An upgrade's new process serves this address now: new connections go to it. Requests on
   * connections open here are still answered (Node closes the idle ones) until `close`.
   */
  stopAccepting(): void {
    this.server?.close();
  }

  close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server === null) return Promise.resolve();
    return new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // origin-form only as a path ('//stats' is not the authority `stats`); absolute-form as sent
    const raw = req.url ?? '/';
    let url: URL;
    try {
      url = new URL(raw.startsWith('/') ? `http://admin${raw}` : raw, 'http://admin');
    } catch {
      return sendError(res, 'ZL_ADMIN_BAD_REQUEST', 'the request target is not a URL');
    }
    const path = url.pathname;
    // HEAD is GET without the body (node:http leaves the body out)
    const method = req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET');
    if (path === '/healthz' && method === 'GET') return sendJson(res, 200, { status: 'ok' });
    if (!tokenMatches(req.headers.authorization, this.runtime.config.admin.token)) {
      res.setHeader('www-authenticate', 'Bearer');
      return sendError(res, 'ZL_ADMIN_UNAUTHORIZED', 'a valid bearer token is required');
    }
    const allowed = ENDPOINT_METHODS.get(path);
    if (allowed === undefined) return sendError(res, 'ZL_ADMIN_NOT_FOUND', `no endpoint ${method} ${path}`);
    if (method !== allowed) {
      res.setHeader('allow', allowed === 'GET' ? 'GET, HEAD' : allowed);
      return sendError(res, 'ZL_ADMIN_METHOD_NOT_ALLOWED', `${path} takes ${allowed}, not ${method}`);
    }
    if (controlRefused(path, this.runtime.config.admin.token, req.socket.remoteAddress ?? '')) {
      return sendError(res, 'ZL_ADMIN_FORBIDDEN', `${path} from another host needs admin.token to be set`);
    }
    switch (path) {
      case '/readyz': {
        const r = await this.runtime.readiness();
        return sendJson(res, r.ready ? 200 : 503, { ready: r.ready, reasons: r.reasons });
      }
      case '/stats':
        return sendJson(res, 200, await this.runtime.stats());
      case '/metrics': {
        const text = await this.runtime.metricsText();
        res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE });
        res.end(text);
        return;
      }
      case '/reload': {
        req.resume();
        const report = await this.runtime.reloadFromSource();
        return sendJson(res, report.result === 'refused' ? 422 : 200, report);
      }
      case '/upgrade': {
        req.resume();
        const outcome = await this.runtime.upgrade();
        const status = outcome.result === 'upgraded' ? 200 : outcome.result === 'refused' ? 409 : 500;
        if (outcome.error !== undefined) res.setHeader('x-zipline-error', outcome.error);
        return sendJson(res, status, outcome);
      }
      case '/debug/profile': {
        const given = url.searchParams.get('seconds') ?? '10';
        const seconds = /^[0-9]{1,2}$/.test(given) ? Number(given) : 0;
        if (seconds < 1 || seconds > 60) {
          return sendError(res, 'ZL_ADMIN_BAD_REQUEST', 'seconds must be an integer 1–60');
        }
        const worker = parseWorker(url.searchParams.get('worker'), this.runtime.workers?.count ?? 0);
        if (worker === undefined) {
          return sendError(res, 'ZL_ADMIN_BAD_REQUEST', 'worker must be "primary" or a worker index 0…N-1');
        }
        // a client that goes away ends the profile, so the next request need not wait for it
        const gone = new AbortController();
        res.once('close', () => gone.abort());
        const profile = await this.runtime.profile(seconds, worker, gone.signal);
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-disposition': `attachment; filename="zipline-${process.pid}-${Date.now()}.cpuprofile"`,
        });
        res.end(profile);
        return;
      }
      case '/':
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(DASHBOARD_HTML);
        return;
    }
  }
}

/** Every endpoint and its method (`HEAD` is served as `GET`); another method is 405. */
const ENDPOINT_METHODS = new Map([
  ['/healthz', 'GET'],
  ['/readyz', 'GET'],
  ['/stats', 'GET'],
  ['/metrics', 'GET'],
  ['/reload', 'POST'],
  ['/upgrade', 'POST'],
  ['/debug/profile', 'GET'],
  ['/', 'GET'],
]);

/** `?worker=`: absent → null (the process that serves traffic), `primary` → -1, else an index. */
function parseWorker(text: string | null, count: number): number | null | undefined {
  if (text === null) return null;
  if (text === 'primary') return -1;
  const n = Number(text);
  return Number.isInteger(n) && n >= 0 && n < count ? n : undefined;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, code: ErrorCode, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.setHeader('x-zipline-error', code);
  sendJson(res, new ZiplineError(code, message).status, { error: code, message });
}
