/** The compiled form of an http/https listener's config: what the hot path reads. */
import type { BlockList } from 'node:net';
import { addressList } from '../config/address-list.js';
import type { HttpListenerConfig, HttpRouteConfig } from '../config/schema.js';
import { type ClientAccess, compileClientAccess } from '../l4/client-access.js';
import { compileProxyProtocol, type ProxyProtocolSettings } from '../proxy-protocol/settings.js';
import type { HeaderRules } from './forward-head.js';
import { LocalReply } from './local-reply.js';
import { type RateLimitConfig, RateLimiter } from './rate-limit.js';
import type { RealIpHeader } from './real-ip.js';
import { RouteTable } from './route-table.js';

export interface CompiledRoute {
  /**
   * Label for metrics and logs: host and prefix (`*` for any host) and any conditions, as
   * `api.test/v1 [GET, X-Canary: 1]`; `default` for `listener.upstream`.
   */
  readonly name: string;
  /** `''` for a route zipline answers itself (`local`). */
  readonly upstream: string;
  /** `redirect` / `respond`: the answer, instead of an upstream. */
  readonly local: LocalReply | null;
  readonly request: HeaderRules;
  readonly response: HeaderRules;
  /** The largest request body accepted (`max_body`; Infinity: no limit). */
  readonly maxBody: number;
  /** `rate_limit` of the route, else the listener's; null: none. */
  readonly rateLimit: RateLimiter | null;
  /** `clients` of the route: who may use it (403 otherwise), or null for everyone. */
  readonly clients: ClientAccess | null;
  /** `match.methods`, or null for any. */
  readonly methods: ReadonlySet<string> | null;
  /** `match.headers` as [lower-case name, value or `*` for present], or null. */
  readonly headers: readonly (readonly [string, string])[] | null;
  /** `timeouts.response_header` of the route (ms; 0: off), or null for the upstream's. */
  readonly responseHeaderTimeoutMs: number | null;
  /** `timeouts.idle` of the route (ms; 0: off), or null for the upstream's. */
  readonly idleTimeoutMs: number | null;
}

export interface HttpListenerSettings {
  readonly proto: 'http' | 'https';
  readonly routes: RouteTable<CompiledRoute>;
  /** Upstream names the routes use (for timeouts of the sweep). */
  readonly upstreams: readonly string[];
  /** The routes' own upstream timeouts (ms, each > 0), for the sweep. */
  readonly routeTimeouts: readonly number[];
  readonly trusted: BlockList;
  readonly trustsAnyone: boolean;
  /** `real_ip_header`: where a trusted peer's request names its client, or null. */
  readonly realIpHeader: RealIpHeader | null;
  readonly clientHeaderMs: number;
  readonly clientIdleMs: number;
  /** `timeouts.drain_idle`: the keep-alive idle limit once this listener drains (0: closed at once). */
  readonly drainIdleMs: number;
  readonly maxConnections: number;
  readonly maxHeaderBytes: number;
  readonly maxBodyReplay: number;
  /** A client FIN during a request: `abort` it (499) or `finish` what was received in full. */
  readonly finishOnClientFin: boolean;
  /** A plain-http client opening with the HTTP/2 preface is served HTTP/2 (`h2c`). */
  readonly h2c: boolean;
  /** `merge_slashes`: `//` is `/` in the path routed and sent upstream. */
  readonly mergeSlashes: boolean;
  /** `proxy_protocol`: peers whose connections begin with a PROXY header, or null. */
  readonly proxyProtocol: ProxyProtocolSettings | null;
  /** `clients`: the addresses served, or null for everyone. */
  readonly clients: ClientAccess | null;
  /** `limits.max_connections_per_client`; 0: no cap. */
  readonly maxPerClient: number;
  /** Rate limiters by route name (`''`: the listener's), kept by a reload that does not change them. */
  readonly limiters: ReadonlyMap<string, RateLimiter>;
}

const NO_RULES: HeaderRules = Object.freeze({
  remove: new Set<string>(),
  set: new Map<string, string>(),
  setNames: new Set<string>(),
});

function rules(r: { set: Record<string, string>; remove: string[] }): HeaderRules {
  if (r.remove.length === 0 && Object.keys(r.set).length === 0) return NO_RULES;
  return Object.freeze({
    remove: new Set(r.remove.map((n) => n.toLowerCase())),
    set: new Map(Object.entries(r.set)),
    setNames: new Set(Object.keys(r.set).map((n) => n.toLowerCase())),
  });
}

/** `max_body: 0` is no limit, as nginx's `client_max_body_size 0`. */
function noLimitIfZero(bytes: number): number {
  return bytes === 0 ? Number.POSITIVE_INFINITY : bytes;
}

/** The limiters of a compile: the previous settings' are kept where their config is the same. */
class Limiters {
  readonly made = new Map<string, RateLimiter>();
  constructor(private readonly previous: ReadonlyMap<string, RateLimiter> | undefined) {}

  for(name: string, cfg: RateLimitConfig | undefined): RateLimiter | null {
    if (cfg === undefined) return null;
    const old = this.previous?.get(name);
    const limiter = old?.sameAs(cfg) === true ? old : new RateLimiter(cfg);
    this.made.set(name, limiter);
    return limiter;
  }
}

function route(
  r: HttpRouteConfig,
  maxBody: number,
  limiters: Limiters,
  shared: RateLimiter | null,
): CompiledRoute {
  // conditions are part of the name: routes of one prefix stay apart in logs, metrics and limiters
  const when = [
    ...(r.match.methods ?? []),
    ...Object.entries(r.match.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
  ];
  const name = `${r.match.host ?? '*'}${r.match.path_prefix}${when.length > 0 ? ` [${when.join(', ')}]` : ''}`;
  const own = r.rate_limit;
  const response = rules(r.headers.response);
  const local =
    r.redirect !== undefined
      ? new LocalReply({ redirect: r.redirect }, response.set)
      : r.respond !== undefined
        ? new LocalReply({ respond: r.respond }, response.set)
        : null;
  return Object.freeze({
    name,
    upstream: r.upstream ?? '',
    local,
    request: rules(r.headers.request),
    response,
    maxBody: r.max_body === undefined ? maxBody : noLimitIfZero(r.max_body),
    rateLimit: own === undefined ? shared : own === 'off' ? null : limiters.for(name, own),
    clients: compileClientAccess(r.clients),
    methods: r.match.methods === undefined ? null : new Set(r.match.methods),
    headers:
      r.match.headers === undefined
        ? null
        : Object.entries(r.match.headers).map(([k, v]) => [k.toLowerCase(), v] as const),
    responseHeaderTimeoutMs: r.timeouts?.response_header ?? null,
    idleTimeoutMs: r.timeouts?.idle ?? null,
  });
}

/** `previous`: the settings a reload replaces (rate limiters with unchanged settings carry over). */
export function compileHttpListener(
  cfg: HttpListenerConfig,
  previous?: HttpListenerSettings,
): HttpListenerSettings {
  const maxBody = noLimitIfZero(cfg.limits.max_body ?? 0);
  const limiters = new Limiters(previous?.limiters);
  const shared = limiters.for('', cfg.rate_limit);
  const specs = cfg.routes.map((r) => ({
    host: r.match.host,
    pathPrefix: r.match.path_prefix,
    stripPrefix: r.strip_prefix,
    conditional: r.match.headers !== undefined || r.match.methods !== undefined,
    value: route(r, maxBody, limiters, shared),
  }));
  if (cfg.upstream !== undefined) {
    // the listener's own upstream: a catch-all tried after every route (nginx `location /` last)
    specs.push({
      host: undefined,
      pathPrefix: '',
      stripPrefix: false,
      conditional: false,
      value: Object.freeze({
        name: 'default',
        upstream: cfg.upstream,
        local: null,
        request: NO_RULES,
        response: NO_RULES,
        maxBody,
        rateLimit: shared,
        clients: null,
        methods: null,
        headers: null,
        responseHeaderTimeoutMs: null,
        idleTimeoutMs: null,
      }),
    });
  }
  const trusted = addressList(cfg.trusted_proxies);
  return Object.freeze({
    proto: cfg.protocol,
    routes: new RouteTable(specs),
    upstreams: [...new Set(specs.map((s) => s.value.upstream).filter((u) => u !== ''))],
    routeTimeouts: specs
      .flatMap((s) => [s.value.responseHeaderTimeoutMs ?? 0, s.value.idleTimeoutMs ?? 0])
      .filter((ms) => ms > 0),
    trusted,
    trustsAnyone: cfg.trusted_proxies.length > 0,
    realIpHeader: cfg.real_ip_header ?? null,
    clientHeaderMs: cfg.timeouts.client_header,
    clientIdleMs: cfg.timeouts.client_idle,
    drainIdleMs: cfg.timeouts.drain_idle,
    maxConnections: cfg.limits.max_connections,
    maxHeaderBytes: cfg.limits.max_header_bytes,
    maxBodyReplay: cfg.limits.max_body_replay,
    finishOnClientFin: cfg.client_fin === 'finish',
    h2c: cfg.protocol === 'http' && cfg.h2c !== false,
    mergeSlashes: cfg.merge_slashes,
    proxyProtocol: compileProxyProtocol(cfg.proxy_protocol),
    clients: compileClientAccess(cfg.clients),
    maxPerClient: cfg.limits.max_connections_per_client,
    limiters: limiters.made,
  });
}

/**
 * How long a keep-alive connection may wait for its next request: `client_idle` (0: no limit), at
 * most `drain_idle` once the listener drains (its next request is answered with `Connection: close`).
 */
export function keepAliveIdleMs(s: HttpListenerSettings, draining: boolean): number {
  if (!draining || s.drainIdleMs === 0) return s.clientIdleMs;
  return s.clientIdleMs > 0 ? Math.min(s.clientIdleMs, s.drainIdleMs) : s.drainIdleMs;
}

/** The largest header list Node's HTTP/2 layer (nghttp2) takes; a larger one resets the stream. */
const H2_HEADER_LIST_MAX = 65536;

/**
 * `limits.max_header_bytes` above what HTTP/2 clients can send: over HTTP/2 (ALPN `h2`, `h2c`), a
 * request head past 64 KiB is refused by nghttp2 (REFUSED_STREAM) before zipline sees it, whatever
 * the limit says; only HTTP/1.1 clients get the larger heads through. Said by `run` and `check`.
 */
export function h2HeadWarning(cfg: HttpListenerConfig): string | null {
  if (cfg.limits.max_header_bytes <= H2_HEADER_LIST_MAX) return null;
  const h2 = cfg.protocol === 'https' ? (cfg.tls?.alpn ?? ['h2']).includes('h2') : cfg.h2c !== false;
  if (!h2) return null;
  return 'limits.max_header_bytes is over 64 KiB, the most an HTTP/2 client can send: a larger head over HTTP/2 has its stream refused (REFUSED_STREAM), not 431';
}
