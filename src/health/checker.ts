/**
 * Active health checks for one upstream: every `interval`, each endpoint gets a `tcp` connect, an
 * `http` GET or a `grpc` health call (grpc-check.ts) bounded by `timeout`. `fall` consecutive failures take an endpoint out of
 * rotation, `rise` consecutive passes bring it back. At most one check per endpoint is in flight.
 */
import { request } from 'node:http';
import { request as requestTls } from 'node:https';
import { connect, type Socket } from 'node:net';
import { connect as connectTls } from 'node:tls';
import { isLocalExhaustion } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { metrics } from '../metrics/catalog.js';
import { localProxyHeader } from '../proxy-protocol/header.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { OriginTls } from '../upstream/origin-tls.js';
import type { HealthSettings } from '../upstream/settings.js';
import { checkGrpc } from './grpc-check.js';

export class HealthChecker {
  private readonly inFlight = new Set<Endpoint>();
  private timer: NodeJS.Timeout | null = null;
  private readonly passCounter;
  private readonly failCounter;

  constructor(
    private readonly upstream: string,
    readonly settings: HealthSettings,
    private readonly endpoints: () => readonly Endpoint[],
    private readonly log: Logger,
  ) {
    this.passCounter = metrics.healthChecks.labels(upstream, 'pass');
    this.failCounter = metrics.healthChecks.labels(upstream, 'fail');
  }

  start(): void {
    if (this.timer !== null) return;
    this.runOnce();
    this.timer = setInterval(() => this.runOnce(), this.settings.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  runOnce(): void {
    for (const e of this.endpoints()) {
      if (this.inFlight.has(e)) continue;
      this.inFlight.add(e);
      this.check(e, (error) => {
        this.inFlight.delete(e);
        if (this.timer === null) return; // stopped meanwhile: the result belongs to nobody
        this.record(e, error);
      });
    }
  }

  private record(e: Endpoint, error: string | null): void {
    const { rise, fall } = this.settings;
    // the check could not even open its socket (zipline out of descriptors or ports): it says
    // nothing about the server, so it neither passes nor fails
    if (error !== null && isLocalExhaustion(error)) {
      e.lastCheckError = error;
      return;
    }
    if (error === null) {
      this.passCounter.inc();
      e.checkPasses++;
      e.checkFails = 0;
      e.lastCheckError = null;
      if (!e.activeHealthy && e.checkPasses >= rise) {
        e.activeHealthy = true;
        this.log.info(
          { upstream: this.upstream, server: e.address },
          'health check: server is healthy again',
        );
      }
    } else {
      this.failCounter.inc();
      e.checkFails++;
      e.checkPasses = 0;
      e.lastCheckError = error;
      if (e.activeHealthy && e.checkFails >= fall) {
        e.activeHealthy = false;
        this.log.warn(
          { upstream: this.upstream, server: e.address, error },
          'health check: server taken out of rotation',
        );
      }
    }
  }

  private check(e: Endpoint, done: (error: string | null) => void): void {
    if (this.settings.type === 'tcp') checkTcp(e, this.settings.timeoutMs, done);
    else if (this.settings.type === 'grpc') checkGrpc(e, this.settings, done);
    else checkHttp(e, this.settings, done);
  }
}

function checkTcp(e: Endpoint, timeoutMs: number, done: (error: string | null) => void): void {
  let finished = false;
  const socket = connect({ host: e.ip, port: e.port });
  const finish = (error: string | null): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.destroy();
    done(error);
  };
  const timer = setTimeout(() => finish('timeout'), timeoutMs);
  socket.once('connect', () => finish(null));
  socket.once('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
}

function checkHttp(e: Endpoint, s: HealthSettings, done: (error: string | null) => void): void {
  if (s.sendProxy === 0) {
    requestCheck(e, s, null, s.timeoutMs, done);
    return;
  }
  // `send_proxy`: the check is zipline's own connection, so it begins with a header that says so
  // (v1 UNKNOWN, v2 LOCAL), written once connected, before the request (and the TLS handshake)
  const startedAt = performance.now();
  const socket = connect({ host: e.ip, port: e.port });
  let failed = false;
  const fail = (error: string): void => {
    if (failed) return;
    failed = true;
    clearTimeout(timer);
    socket.destroy();
    done(error);
  };
  const timer = setTimeout(() => fail('timeout'), s.timeoutMs);
  socket.once('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
  socket.once('connect', () => {
    if (failed) return;
    failed = true; // the request's own handlers take over
    clearTimeout(timer);
    socket.removeAllListeners('error');
    // the request listens on this socket, or, with TLS, on the one made over it: a late error
    // here then has nobody else to hear it
    socket.on('error', () => {});
    socket.write(localProxyHeader(s.sendProxy as 1 | 2));
    requestCheck(e, s, socket, Math.max(1, s.timeoutMs - (performance.now() - startedAt)), done);
  });
}

/** The check's GET, on `socket` when given (already connected), within `timeoutMs`. */
function requestCheck(
  e: Endpoint,
  s: HealthSettings,
  socket: Socket | null,
  timeoutMs: number,
  done: (error: string | null) => void,
): void {
  let finished = false;
  const options = {
    host: e.ip,
    port: e.port,
    path: s.path,
    method: 'GET',
    headers: { host: s.host ?? e.server, 'user-agent': 'zipline-health-check', connection: 'close' },
    // a fresh connection for each check (no agent), or the given one (an agent would open its own)
    ...(socket === null
      ? { agent: false as const }
      : {
          createConnection: () =>
            s.tls === null ? socket : connectTls({ ...(s.tls as OriginTls).connectOptions(e), socket }),
        }),
  };
  // with the upstream's TLS: its trust, names and client certificate, as requests have them
  const req = s.tls === null ? request(options) : requestTls({ ...s.tls.connectOptions(e), ...options });
  const finish = (error: string | null): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    req.destroy();
    done(error);
  };
  const timer = setTimeout(() => finish('timeout'), timeoutMs);
  req.once('response', (res) => {
    const code = res.statusCode ?? 0;
    const ok = s.expectStatus.length > 0 ? s.expectStatus.includes(code) : code >= 200 && code < 400;
    res.resume();
    finish(ok ? null : `status ${code}`);
  });
  req.once('error', (err: NodeJS.ErrnoException) =>
    // llhttp's codes (HPE_INVALID_CONSTANT…) say little to whoever reads /stats or the log
    finish(
      err.code?.startsWith('HPE_') ? `not a valid HTTP response (${err.code})` : (err.code ?? err.message),
    ),
  );
  req.end();
}
