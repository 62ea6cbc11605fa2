/** The compiled, immutable form of one upstream's config: what the runtime reads. */
import type { BalancePolicy } from '../balancer/index.js';
import type { UpstreamConfig } from '../config/schema.js';
import { parseHostPort } from '../config/units.js';
import { type SendProxy, sendProxyVersion } from '../proxy-protocol/settings.js';
import type { EndpointSettings } from './endpoint.js';
import { OriginTls } from './origin-tls.js';

/** `health_check.timeout` when unset, unless half of `interval` is shorter. */
const HEALTH_TIMEOUT_MS = 2000;

/** `retry.backoff.max` when unset: this many times `base` (Envoy's `max_interval` default). */
const BACKOFF_MAX_PER_BASE = 10;

export interface ServerSpec {
  /** `host:port` exactly as configured. */
  readonly server: string;
  readonly host: string;
  readonly port: number;
  readonly settings: EndpointSettings;
}

export interface HealthSettings {
  readonly type: 'tcp' | 'http' | 'grpc';
  readonly path: string;
  /** `type: grpc`: the service asked about ('' the whole server). */
  readonly service: string;
  readonly host: string | undefined;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly rise: number;
  readonly fall: number;
  readonly expectStatus: readonly number[];
  /** `type: http` checks speak TLS when the upstream does. */
  readonly tls: OriginTls | null;
  /** `type: http` checks begin with a v1 UNKNOWN / v2 LOCAL header (`send_proxy`). */
  readonly sendProxy: SendProxy;
}

export interface UpstreamSettings {
  readonly name: string;
  readonly policy: BalancePolicy;
  readonly hashKey: string;
  readonly resolveIntervalMs: number;
  readonly servers: readonly ServerSpec[];
  readonly health: HealthSettings | undefined;
  readonly connectTimeoutMs: number;
  readonly retryAttempts: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  readonly maxConnections: number;
  // HTTP
  readonly keepaliveMaxIdle: number;
  readonly keepaliveIdleTimeoutMs: number;
  readonly keepaliveMaxRequests: number;
  readonly responseHeaderTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly retryOnConnectFailure: boolean;
  readonly retryOnReset: boolean;
  readonly retryOnTimeout: boolean;
  /** HTTP statuses that are retried (and count as failures for passive health and the breaker). */
  readonly retryStatuses: ReadonlySet<number>;
  readonly retryBudget: number;
  readonly breaker: BreakerSettings;
  /** TLS to the servers (HTTP listeners), or null for plain TCP. */
  readonly tls: OriginTls | null;
  /** `send_proxy` (tcp listeners): the PROXY header version each connection begins with, 0 none. */
  readonly sendProxy: SendProxy;
  /** `http_version: 2`: HTTP listeners speak HTTP/2 to the servers (h2-upstream/). */
  readonly http2: boolean;
  /** The validated config this was compiled from, for reload diffs. */
  readonly source: UpstreamConfig;
}

export interface BreakerSettings {
  readonly maxPending: number;
  readonly failureRatio: number;
  readonly minRequests: number;
  readonly windowMs: number;
  readonly openForMs: number;
}

export function compileUpstream(name: string, cfg: UpstreamConfig): UpstreamSettings {
  const servers = cfg.servers.map((s): ServerSpec => {
    const hp = parseHostPort(s.address);
    if (hp === undefined) throw new Error(`unreachable: address validated by schema: ${s.address}`);
    return {
      server: s.address,
      host: hp.host,
      port: hp.port,
      settings: Object.freeze({
        weight: s.weight,
        maxFails: s.max_fails,
        failTimeoutMs: s.fail_timeout,
        maxConnections: s.max_connections,
        backup: s.backup,
      }),
    };
  });
  const hc = cfg.health_check;
  const tls = cfg.tls === undefined ? null : new OriginTls(name, cfg.tls);
  return Object.freeze({
    name,
    policy: cfg.balance,
    hashKey: cfg.hash_key,
    resolveIntervalMs: cfg.resolve_interval,
    servers,
    health:
      hc === undefined
        ? undefined
        : Object.freeze({
            type: hc.type,
            path: hc.path,
            host: hc.host,
            service: hc.service,
            intervalMs: hc.interval,
            timeoutMs: hc.timeout ?? Math.min(HEALTH_TIMEOUT_MS, Math.floor(hc.interval / 2)),
            rise: hc.rise,
            fall: hc.fall,
            expectStatus: hc.expect_status,
            tls,
            sendProxy: sendProxyVersion(cfg.send_proxy),
          }),
    connectTimeoutMs: cfg.timeouts.connect,
    retryAttempts: cfg.retry.attempts,
    backoffBaseMs: cfg.retry.backoff.base,
    backoffMaxMs: cfg.retry.backoff.max ?? BACKOFF_MAX_PER_BASE * cfg.retry.backoff.base,
    maxConnections: cfg.circuit_breaker.max_connections,
    keepaliveMaxIdle: cfg.keepalive.max_idle,
    keepaliveIdleTimeoutMs: cfg.keepalive.idle_timeout,
    keepaliveMaxRequests: cfg.keepalive.max_requests,
    responseHeaderTimeoutMs: cfg.timeouts.response_header,
    idleTimeoutMs: cfg.timeouts.idle,
    retryOnConnectFailure: cfg.retry.on.includes('connect_failure'),
    retryOnReset: cfg.retry.on.includes('reset'),
    retryOnTimeout: cfg.retry.on.includes('timeout'),
    retryStatuses: new Set(cfg.retry.on.filter((x): x is number => typeof x === 'number')),
    retryBudget: cfg.retry.budget,
    breaker: Object.freeze({
      maxPending: cfg.circuit_breaker.max_pending,
      failureRatio: cfg.circuit_breaker.failure_ratio,
      minRequests: cfg.circuit_breaker.min_requests,
      windowMs: cfg.circuit_breaker.window,
      openForMs: cfg.circuit_breaker.open_for,
    }),
    tls,
    sendProxy: sendProxyVersion(cfg.send_proxy),
    http2: cfg.http_version === '2',
    source: cfg,
  });
}
