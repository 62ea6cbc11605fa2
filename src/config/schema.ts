/**
 * The config schema. Strict everywhere (unknown keys are errors), defaults from `reference.ts`,
 * units parsed here so everything downstream sees milliseconds and bytes.
 */
import { createSecureContext } from 'node:tls';
import { z } from 'zod';
import { parseAllowEntry } from '../tunnel/allow-list.js';
import { normalizeFingerprint } from '../tunnel/tls.js';
import { def, HTTP_CLIENT_IDLE_DEFAULT } from './reference.js';
import {
  normalizeListen,
  parseCidr,
  parseDuration,
  parseHostPort,
  parsePercent,
  parseSize,
} from './units.js';

/**
 * A duration is a string with a unit. A bare number other than 0 is refused with its own message:
 * nginx reads `3` as seconds and HAProxy as milliseconds, so it cannot be guessed.
 */
const duration = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const ms = typeof v === 'number' ? (v === 0 ? 0 : undefined) : parseDuration(v);
  if (ms === undefined) {
    ctx.issues.push({
      code: 'custom',
      input: v,
      message:
        typeof v === 'number'
          ? `a duration needs a unit: write ${v}s or ${v}ms, not ${v}`
          : `invalid duration "${v}": use a number with a unit (250ms, 3s, 2m, 1h)`,
    });
    return z.NEVER;
  }
  return ms;
});

const percent = z.string().transform((text, ctx) => {
  const v = parsePercent(text);
  if (v === undefined) {
    ctx.issues.push({ code: 'custom', input: text, message: `invalid percentage "${text}": use 0%–100%` });
    return z.NEVER;
  }
  return v;
});

const hostPort = z.string().refine((s) => parseHostPort(s) !== undefined, {
  message: 'expected host:port (IPv6 as [::1]:port)',
});

const count = (min: number, max: number) => z.int().min(min).max(max);

/** A listen address; a bare port (`6432` or `"6432"`) means all interfaces, as nginx `listen 6432;`. */
const listenAddress = z.preprocess(normalizeListen, hostPort);

const serverObject = z.strictObject({
  address: hostPort,
  weight: count(1, 1000).prefault(def('upstreams.*.servers[].weight')),
  max_fails: count(0, 1_000_000).prefault(def('upstreams.*.servers[].max_fails')),
  fail_timeout: duration.prefault(def('upstreams.*.servers[].fail_timeout')),
  max_connections: count(0, 10_000_000).prefault(def('upstreams.*.servers[].max_connections')),
});

/** A server may be written as a bare `host:port` string. */
const server = z.preprocess((v) => (typeof v === 'string' ? { address: v } : v), serverObject);

const healthCheck = z.strictObject({
  type: z.enum(['tcp', 'http']).prefault(def('upstreams.*.health_check.type')),
  path: z.string().startsWith('/').prefault(def('upstreams.*.health_check.path')),
  host: z.string().min(1).optional(),
  interval: duration.prefault(def('upstreams.*.health_check.interval')),
  timeout: duration.prefault(def('upstreams.*.health_check.timeout')),
  rise: count(1, 100).prefault(def('upstreams.*.health_check.rise')),
  fall: count(1, 100).prefault(def('upstreams.*.health_check.fall')),
  expect_status: z.array(count(100, 599)).prefault(def('upstreams.*.health_check.expect_status')),
});

const hashKey = z
  .string()
  .regex(/^(client_ip|path|header:[A-Za-z0-9!#$%&'*+.^_`|~-]+)$/, 'expected client_ip, path or header:NAME');

const retryOn = z.union([z.enum(['connect_failure', 'reset', 'timeout']), count(500, 599)]);

/** TLS to an upstream's servers; `true` is `{}` (every default), `false` none. */
const originTls = z.preprocess(
  (v) => (v === true ? {} : v === false ? undefined : v),
  z
    .strictObject({
      server_name: z.string().min(1).optional(),
      verify: z.boolean().prefault(def('upstreams.*.tls.verify')),
      ca: z.string().min(1).optional(),
      cert: z.string().min(1).optional(),
      key: z.string().min(1).optional(),
      min_version: z.enum(['TLSv1.2', 'TLSv1.3']).prefault(def('upstreams.*.tls.min_version')),
    })
    .refine((t) => (t.cert === undefined) === (t.key === undefined), {
      message: '`cert` and `key` go together (a client certificate needs its key)',
    })
    .optional(),
);

const upstream = z.strictObject({
  balance: z
    .enum(['round_robin', 'least_conn', 'p2c', 'random', 'hash', 'adaptive'])
    .prefault(def('upstreams.*.balance')),
  hash_key: hashKey.prefault(def('upstreams.*.hash_key')),
  resolve_interval: duration.prefault(def('upstreams.*.resolve_interval')),
  servers: z.array(server).min(1, 'an upstream needs at least one server'),
  health_check: healthCheck.optional(),
  tls: originTls,
  keepalive: z
    .strictObject({
      max_idle: count(0, 100_000).prefault(def('upstreams.*.keepalive.max_idle')),
      idle_timeout: duration.prefault(def('upstreams.*.keepalive.idle_timeout')),
      max_requests: count(1, 100_000_000).prefault(def('upstreams.*.keepalive.max_requests')),
    })
    .prefault({}),
  timeouts: z
    .strictObject({
      connect: duration.prefault(def('upstreams.*.timeouts.connect')),
      response_header: duration.prefault(def('upstreams.*.timeouts.response_header')),
      idle: duration.prefault(def('upstreams.*.timeouts.idle')),
    })
    .prefault({}),
  retry: z
    .strictObject({
      attempts: count(0, 10).prefault(def('upstreams.*.retry.attempts')),
      backoff: z
        .strictObject({
          base: duration.prefault(def('upstreams.*.retry.backoff.base')),
          max: duration.prefault(def('upstreams.*.retry.backoff.max')),
        })
        .prefault({}),
      on: z.array(retryOn).prefault(def('upstreams.*.retry.on')),
      budget: percent.prefault(def('upstreams.*.retry.budget')),
    })
    .prefault({}),
  circuit_breaker: z
    .strictObject({
      max_connections: count(1, 10_000_000).prefault(def('upstreams.*.circuit_breaker.max_connections')),
      max_pending: count(0, 10_000_000).prefault(def('upstreams.*.circuit_breaker.max_pending')),
      failure_ratio: z.number().gt(0).max(1).prefault(def('upstreams.*.circuit_breaker.failure_ratio')),
      min_requests: count(1, 1_000_000).prefault(def('upstreams.*.circuit_breaker.min_requests')),
      window: duration.prefault(def('upstreams.*.circuit_breaker.window')),
      open_for: duration.prefault(def('upstreams.*.circuit_breaker.open_for')),
    })
    .prefault({}),
});

const listenerNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'use 1–64 letters, digits, _ . : -')
  .optional();

const tcpListener = z.strictObject({
  name: listenerNameSchema,
  protocol: z.literal('tcp'),
  listen: listenAddress,
  upstream: z.string().min(1),
  timeouts: z
    .strictObject({ client_idle: duration.prefault(def('listeners[].timeouts.client_idle')) })
    .prefault({}),
  limits: z
    .strictObject({
      max_connections: count(1, 10_000_000).prefault(def('listeners[].limits.max_connections')),
    })
    .prefault({}),
  native: z.enum(['auto', 'off']).prefault(def('listeners[].native')),
});

const udpListener = z.strictObject({
  name: listenerNameSchema,
  protocol: z.literal('udp'),
  listen: listenAddress,
  upstream: z.string().min(1),
  udp: z
    .strictObject({
      responses: count(0, 1_000_000).prefault(def('listeners[].udp.responses')),
      idle_timeout: duration.prefault(def('listeners[].udp.idle_timeout')),
      max_sessions: count(1, 10_000_000).prefault(def('listeners[].udp.max_sessions')),
      max_queue: count(1, 100_000).prefault(def('listeners[].udp.max_queue')),
    })
    .prefault({}),
  native: z.enum(['auto', 'off']).prefault(def('listeners[].native')),
});

const size = z.union([z.int().min(0), z.string()]).transform((v, ctx) => {
  const n = typeof v === 'number' ? v : parseSize(v);
  if (n === undefined) {
    ctx.issues.push({ code: 'custom', input: v, message: `invalid size "${v}": use 512, 16KiB, 8MiB` });
    return z.NEVER;
  }
  return n;
});

/** A header field name (RFC 9110 token). */
const fieldName = z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'expected a header field name');
/** A header field value: visible characters, spaces and tabs; no CR/LF. */
const fieldValue = z
  .string()
  .regex(/^[\t\x20-\x7e\x80-\xff]*$/, 'header values may not contain CR, LF or controls');

const headerRules = z
  .strictObject({
    set: z.record(fieldName, fieldValue).prefault({}),
    remove: z.array(fieldName).prefault([]),
  })
  .prefault({});

const httpRoute = z.strictObject({
  match: z
    .strictObject({
      host: z
        .string()
        .regex(/^(\*\.)?[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.]+\]$/, 'expected a host name, *.suffix or [IPv6]')
        .optional(),
      path_prefix: z.string().startsWith('/').prefault(def('listeners[].routes[].match.path_prefix')),
    })
    .prefault({}),
  upstream: z.string().min(1),
  strip_prefix: z.boolean().prefault(def('listeners[].routes[].strip_prefix')),
  headers: z.strictObject({ request: headerRules, response: headerRules }).prefault({}),
});

/** An address or CIDR block (`10.0.0.0/8`, `::1`, `fd00::/8`). */
const cidr = z.string().refine((s) => parseCidr(s) !== undefined, {
  message: 'expected an IP address or CIDR block (10.0.0.0/8)',
});

/** Whether OpenSSL can use a cipher list (it ignores unknown names while one matches). */
function knownCiphers(list: string): boolean {
  try {
    createSecureContext({ ciphers: list });
    return true;
  } catch {
    return false;
  }
}

const tlsCert = z.strictObject({ cert: z.string().min(1), key: z.string().min(1) });

const tlsSettings = z.strictObject({
  cert: z.string().min(1).optional(),
  key: z.string().min(1).optional(),
  certificates: z.array(tlsCert).prefault([]),
  min_version: z.enum(['TLSv1.2', 'TLSv1.3']).prefault(def('listeners[].tls.min_version')),
  ciphers: z
    .string()
    .min(1)
    .refine(knownCiphers, { message: 'OpenSSL knows none of these cipher suites' })
    .prefault(def('listeners[].tls.ciphers')),
  alpn: z
    .array(z.enum(['h2', 'http/1.1']))
    .min(1)
    .prefault(def('listeners[].tls.alpn')),
});

function httpListenerOf<P extends 'http' | 'https'>(protocol: P) {
  return z.strictObject({
    name: listenerNameSchema,
    protocol: z.literal(protocol),
    listen: listenAddress,
    upstream: z.string().min(1).optional(),
    routes: z.array(httpRoute).prefault([]),
    trusted_proxies: z.array(cidr).prefault(def('listeners[].trusted_proxies')),
    client_fin: z.enum(['abort', 'finish']).prefault(def('listeners[].client_fin')),
    h2c: z.boolean().optional(), // http only (cross-check.ts); on unless false
    tls: tlsSettings.optional(),
    timeouts: z
      .strictObject({
        client_header: duration.prefault(def('listeners[].timeouts.client_header')),
        client_idle: duration.prefault(HTTP_CLIENT_IDLE_DEFAULT as never),
      })
      .prefault({}),
    limits: z
      .strictObject({
        max_connections: count(1, 10_000_000).prefault(def('listeners[].limits.max_connections')),
        max_header_bytes: size.prefault(def('listeners[].limits.max_header_bytes')),
        max_body_replay: size.prefault(def('listeners[].limits.max_body_replay')),
      })
      .prefault({}),
    native: z.enum(['auto', 'off']).prefault(def('listeners[].native')),
  });
}

const httpListener = httpListenerOf('http');
const httpsListener = httpListenerOf('https');

/** A relay `allow` entry (src/tunnel/allow-list.ts). */
const allowEntry = z.string().superRefine((text, ctx) => {
  const r = parseAllowEntry(text);
  if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r });
});

/**
 * `socks5` / `http_proxy` listeners: forward proxies that dial destinations directly (the tunnel
 * agent's entries dial through the tunnel instead). Destinations must be on `allow`.
 */
function proxyListenerOf<P extends 'socks5' | 'http_proxy'>(protocol: P) {
  return z.strictObject({
    name: listenerNameSchema,
    protocol: z.literal(protocol),
    listen: listenAddress,
    allow: z.array(allowEntry).min(1, 'name the destinations this proxy may reach'),
    timeouts: z
      .strictObject({
        connect: duration.prefault(def('listeners[].timeouts.connect')),
        client_header: duration.prefault(def('listeners[].timeouts.client_header')),
        client_idle: duration.prefault(def('listeners[].timeouts.client_idle')),
      })
      .prefault({}),
    limits: z
      .strictObject({
        max_connections: count(1, 10_000_000).prefault(def('listeners[].limits.max_connections')),
      })
      .prefault({}),
  });
}

const heartbeat = z
  .strictObject({
    interval: duration.prefault(def('tunnel.relay.heartbeat.interval')),
    misses: count(1, 100).prefault(def('tunnel.relay.heartbeat.misses')),
  })
  .prefault({});

const tunnelLimits = z
  .strictObject({
    max_streams: count(1, 1_000_000).prefault(def('tunnel.relay.limits.max_streams')),
    session_window: size
      .refine((n) => n >= 65_536 && n <= 0x7fff_ffff, '64KiB – 2GiB')
      .prefault(def('tunnel.relay.limits.session_window')),
    stream_window: size
      .refine((n) => n >= 16_384 && n <= 0x7fff_ffff, '16KiB – 2GiB')
      .prefault(def('tunnel.relay.limits.stream_window')),
    max_stream_window: size
      .refine((n) => n >= 16_384 && n <= 0x7fff_ffff, '16KiB – 2GiB')
      .prefault(def('tunnel.relay.limits.max_stream_window')),
    max_payload: size
      .refine((n) => n >= 1024 && n <= 65_536, '1KiB – 64KiB')
      .prefault(def('tunnel.relay.limits.max_payload')),
  })
  .prefault({});

const tunnelToken = z.string().min(16, 'tokens must be at least 16 characters (use ${ENV} or a file)');

const tunnelRelay = z.strictObject({
  listen: listenAddress,
  tls: z
    .union([z.enum(['auto', 'off']), z.strictObject({ cert: z.string().min(1), key: z.string().min(1) })])
    .prefault(def('tunnel.relay.tls')),
  ciphers: z
    .string()
    .min(1)
    .refine((s) => s.split(':').every((n) => n.startsWith('TLS_')) && knownCiphers(s), {
      message:
        'expected TLS 1.3 suites OpenSSL knows, e.g. TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256',
    })
    .prefault(def('tunnel.relay.ciphers')),
  state_dir: z.string().min(1).prefault(def('tunnel.relay.state_dir')),
  tokens: z.array(tunnelToken).min(1, 'a relay needs at least one token'),
  allow: z.array(allowEntry).prefault([]),
  connect_timeout: duration.prefault(def('tunnel.relay.connect_timeout')),
  idle_timeout: duration.prefault(def('tunnel.relay.idle_timeout')),
  udp_idle_timeout: duration.prefault(def('tunnel.relay.udp_idle_timeout')),
  max_sessions: count(1, 1_000_000).prefault(def('tunnel.relay.max_sessions')),
  heartbeat,
  limits: tunnelLimits,
  native: z.enum(['auto', 'off']).prefault(def('tunnel.relay.native')),
});

const relayRef = z.preprocess(
  (v) => (typeof v === 'string' ? { address: v } : v),
  z.strictObject({
    address: hostPort,
    fingerprint: z
      .string()
      .refine((f) => normalizeFingerprint(f) !== null, 'expected sha256: followed by 64 hex digits')
      .optional(),
    ca: z.string().min(1).optional(),
    tls: z.boolean().prefault(def('tunnel.agent.relays[].tls')),
    server_name: z.string().min(1).optional(),
  }),
);

const forward = z.strictObject({
  listen: listenAddress,
  to: hostPort,
  protocol: z.enum(['tcp', 'udp']).prefault(def('tunnel.agent.forwards[].protocol')),
});

const tunnelAgent = z.strictObject({
  id: z
    .string()
    .regex(/^[A-Za-z0-9._:@-]{1,128}$/, 'use 1–128 letters, digits, . _ : @ -')
    .optional(),
  relays: z.array(relayRef).min(1, 'an agent needs at least one relay'),
  token: tunnelToken,
  via: z
    .string()
    .refine(
      (v) => v === '' || /^(https?|socks5h?):\/\/([^@/]+@)?[^/]+:\d+\/?$/.test(v),
      'expected http://[user:pass@]host:port or socks5://host:port',
    )
    .optional(),
  compression: z.enum(['none', 'zstd']).prefault(def('tunnel.agent.compression')),
  heartbeat,
  reconnect: z
    .strictObject({
      base: duration
        .refine((ms) => ms >= 10, 'at least 10ms (a relay must not be hammered)')
        .prefault(def('tunnel.agent.reconnect.base')),
      max: duration.prefault(def('tunnel.agent.reconnect.max')),
    })
    .refine((r) => r.base <= r.max, { message: 'base must not exceed max', path: ['base'] })
    .prefault({}),
  connect_timeout: duration.prefault(def('tunnel.agent.connect_timeout')),
  idle_timeout: duration.prefault(def('tunnel.agent.idle_timeout')),
  forwards: z.array(forward).prefault([]),
  socks5: listenAddress.optional(),
  http_proxy: listenAddress.optional(),
  limits: tunnelLimits,
  native: z.enum(['auto', 'off']).prefault(def('tunnel.agent.native')),
});

const shmBridge = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'use 1–64 letters, digits, _ . -'),
  segment: z.string().regex(/^\/[A-Za-z0-9_.-]{1,200}$/, 'a POSIX shared-memory name: /name'),
  snapshot_capacity: size.prefault(def('shm[].snapshot_capacity')),
  slots: count(2, 1 << 20)
    .refine((n) => (n & (n - 1)) === 0, 'slots must be a power of two')
    .prefault(def('shm[].slots')),
  slot_size: size
    .refine((n) => n >= 32 && n % 16 === 0 && n <= 1 << 20, 'slot_size: 32 B–1 MiB, a multiple of 16')
    .prefault(def('shm[].slot_size')),
  http: hostPort.prefault(def('shm[].http')),
  create: z.boolean().prefault(def('shm[].create')),
  mode: z
    .string()
    .regex(/^0?[0-7]{3}$/, 'an octal mode such as 0600')
    .prefault(def('shm[].mode')),
  remove_on_exit: z.boolean().prefault(def('shm[].remove_on_exit')),
  wake: z.enum(['futex', 'poll']).prefault(def('shm[].wake')),
});

export const configSchema = z.strictObject({
  admin: z
    .strictObject({
      // a bare port stays on loopback (`:9901` does: the admin server's default host)
      listen: z
        .preprocess((v) => (typeof v === 'number' ? `:${v}` : v), hostPort)
        .prefault(def('admin.listen')),
      token: z.string().prefault(def('admin.token')),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error']).prefault(def('log.level')),
      access: z.string().min(1).prefault(def('log.access')),
    })
    .prefault({}),
  workers: z.union([count(1, 256), z.literal('auto')]).prefault(def('workers')),
  drain_timeout: duration.prefault(def('drain_timeout')),
  upstreams: z
    .record(z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'use 1–64 letters, digits, _ . -'), upstream)
    .prefault({}),
  listeners: z
    .array(
      z.discriminatedUnion('protocol', [
        tcpListener,
        udpListener,
        httpListener,
        httpsListener,
        proxyListenerOf('socks5'),
        proxyListenerOf('http_proxy'),
      ]),
    )
    .prefault([]),
  tunnel: z
    .strictObject({ relay: tunnelRelay.optional(), agent: tunnelAgent.optional() })
    .refine((t) => t.relay !== undefined || t.agent !== undefined, 'name a relay, an agent or both')
    .optional(),
  shm: z.array(shmBridge).prefault([]),
});

export type ValidConfig = z.output<typeof configSchema>;
export type UpstreamConfig = z.output<typeof upstream>;
export type ServerConfig = z.output<typeof serverObject>;
export type HealthCheckConfig = z.output<typeof healthCheck>;
export type TcpListenerConfig = z.output<typeof tcpListener>;
export type UdpListenerConfig = z.output<typeof udpListener>;
export type HttpListenerConfig = z.output<typeof httpListener> | z.output<typeof httpsListener>;
export type ShmBridgeConfig = z.output<typeof shmBridge>;
export type HttpRouteConfig = z.output<typeof httpRoute>;
export type ProxyListenerConfig =
  | z.output<ReturnType<typeof proxyListenerOf<'socks5'>>>
  | z.output<ReturnType<typeof proxyListenerOf<'http_proxy'>>>;
export type ListenerConfig = TcpListenerConfig | UdpListenerConfig | HttpListenerConfig | ProxyListenerConfig;
export type TunnelRelayConfig = z.output<typeof tunnelRelay>;
export type TunnelAgentConfig = z.output<typeof tunnelAgent>;
export type TunnelLimitsConfig = z.output<typeof tunnelLimits>;
