/**
 * The config schema. Strict everywhere (unknown keys are errors), defaults from `reference.ts`,
 * value types (durations, sizes, addresses: parsed to milliseconds and bytes) from
 * `schema-values.ts`, the `tunnel` section from `schema-tunnel.ts`.
 */
import { z } from 'zod';
import { parseTemplate } from '../http/local-reply.js';
import { SHM_LIMITS } from '../shm/layout.js';
import { def, HTTP_CLIENT_IDLE_DEFAULT } from './reference.js';
import { tunnelAgent, type tunnelLimits, tunnelRelay } from './schema-tunnel.js';
import {
  allowEntry,
  cidr,
  count,
  duration,
  hostPort,
  inputAlso,
  knownCiphers,
  listenAddress,
  percent,
  receiveBuffer,
  requestRate,
  size,
  sizeIn,
} from './schema-values.js';

const serverObject = z.strictObject({
  address: hostPort,
  weight: count(1, 1000).prefault(def('upstreams.*.servers[].weight')),
  max_fails: count(0, 1_000_000).prefault(def('upstreams.*.servers[].max_fails')),
  fail_timeout: duration.prefault(def('upstreams.*.servers[].fail_timeout')),
  max_connections: count(0, 10_000_000).prefault(def('upstreams.*.servers[].max_connections')),
  backup: z.boolean().prefault(def('upstreams.*.servers[].backup')),
});

/** A server may be written as a bare `host:port` string. */
const server = z
  .preprocess((v) => (typeof v === 'string' ? { address: v } : v), serverObject)
  .meta(inputAlso({ type: 'string' }));

const healthCheck = z.strictObject({
  type: z.enum(['tcp', 'http', 'grpc']).prefault(def('upstreams.*.health_check.type')),
  path: z.string().startsWith('/').prefault(def('upstreams.*.health_check.path')),
  host: z.string().min(1).optional(),
  service: z.string().prefault(def('upstreams.*.health_check.service')),
  interval: duration.prefault(def('upstreams.*.health_check.interval')),
  timeout: duration.optional(), // unset: min(2s, interval / 2), in upstream/settings.ts
  rise: count(1, 100).prefault(def('upstreams.*.health_check.rise')),
  fall: count(1, 100).prefault(def('upstreams.*.health_check.fall')),
  expect_status: z.array(count(100, 599)).prefault(def('upstreams.*.health_check.expect_status')),
});

const hashKey = z
  .string()
  .regex(
    /^(client_ip|path|(header|cookie):[A-Za-z0-9!#$%&'*+.^_`|~-]+)$/,
    'expected client_ip, path, header:NAME or cookie:NAME',
  );

const retryOn = z.union([z.enum(['connect_failure', 'reset', 'timeout']), count(500, 599)]);

/** TLS to an upstream's servers; `true` is `{}` (every default), `false` none. */
const originTls = z
  .preprocess(
    (v) => (v === true ? {} : v === false ? undefined : v),
    z
      .strictObject({
        server_name: z.string().min(1).optional(),
        verify: z.boolean().prefault(def('upstreams.*.tls.verify')),
        ca: z.string().min(1).optional(),
        crl: z.string().min(1).optional(),
        cert: z.string().min(1).optional(),
        key: z.string().min(1).optional(),
        min_version: z.enum(['TLSv1.2', 'TLSv1.3']).prefault(def('upstreams.*.tls.min_version')),
      })
      .refine((t) => (t.cert === undefined) === (t.key === undefined), {
        message: '`cert` and `key` go together (a client certificate needs its key)',
      })
      .optional(),
  )
  .meta(inputAlso({ type: 'boolean' }));

const upstream = z.strictObject({
  balance: z
    .enum(['round_robin', 'least_conn', 'p2c', 'random', 'hash', 'adaptive'])
    .prefault(def('upstreams.*.balance')),
  hash_key: hashKey.prefault(def('upstreams.*.hash_key')),
  resolve_interval: duration.prefault(def('upstreams.*.resolve_interval')),
  servers: z
    .array(server)
    .min(1, 'an upstream needs at least one server')
    .refine((list) => list.some((s) => !s.backup), 'every server is a backup: at least one must not be'),
  health_check: healthCheck.optional(),
  tls: originTls,
  http_version: z
    .union([z.literal('1.1'), z.literal('2'), z.literal(1.1), z.literal(2)], {
      error: 'expected 1.1 (HTTP/1.1) or 2 (HTTP/2)',
    })
    .transform((v) => String(v) as '1.1' | '2')
    .prefault(def('upstreams.*.http_version')),
  send_proxy: z.enum(['off', 'v1', 'v2']).prefault(def('upstreams.*.send_proxy')),
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
          max: duration.optional(), // unset: 10 × base, in upstream/settings.ts
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

/** `listeners[].proxy_protocol`: the peers whose connections begin with a PROXY header. */
const proxyProtocol = z
  .strictObject({
    from: z.array(cidr).min(1, 'name the load balancers that send the header'),
    timeout: duration.prefault(def('listeners[].proxy_protocol.timeout')),
  })
  .optional();

/** `listeners[].clients`: the client addresses a listener serves. */
const clientAccess = z
  .strictObject({
    allow: z.array(cidr).prefault(def('listeners[].clients.allow')),
    deny: z.array(cidr).prefault(def('listeners[].clients.deny')),
  })
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
      max_connections_per_client: count(0, 10_000_000).prefault(
        def('listeners[].limits.max_connections_per_client'),
      ),
    })
    .prefault({}),
  native: z.enum(['auto', 'off']).prefault(def('listeners[].native')),
  proxy_protocol: proxyProtocol,
  clients: clientAccess,
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
      receive_buffer: receiveBuffer.prefault(def('listeners[].udp.receive_buffer')),
    })
    .prefault({}),
  native: z.enum(['auto', 'off']).prefault(def('listeners[].native')),
  clients: clientAccess,
});

/** A header field name (RFC 9110 token). */
const fieldName = z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'expected a header field name');
/** A header field value: visible characters, spaces and tabs; no CR/LF. */
const fieldValue = z
  .string()
  .regex(/^[\t\x20-\x7e\x80-\xff]*$/, 'header values may not contain CR, LF or controls');

/** Fields zipline writes itself (framing, connection management): no header rule may name them. */
const MANAGED_FIELDS = new Set([
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'proxy-connection',
  'http2-settings',
]);
const MANAGED_MESSAGE =
  'zipline writes this field itself (message framing or connection management); a header rule cannot set or remove it';
const ruleFieldName = fieldName.refine((n) => !MANAGED_FIELDS.has(n.toLowerCase()), MANAGED_MESSAGE);

const headerRules = z
  .strictObject({
    // the keys are checked here, not by the record's key schema, so the message names the key
    set: z
      .record(fieldName, fieldValue)
      .superRefine((rec, ctx) => {
        for (const k of Object.keys(rec)) {
          if (MANAGED_FIELDS.has(k.toLowerCase()))
            ctx.addIssue({ code: 'custom', path: [k], message: MANAGED_MESSAGE });
        }
      })
      .prefault({}),
    remove: z.array(ruleFieldName).prefault([]),
  })
  .prefault({});

/** `rate_limit` of an http/https listener or route (src/http/rate-limit.ts). */
const rateLimit = z.strictObject({
  rate: requestRate,
  burst: count(1, 1_000_000).optional(),
  key: z
    .string()
    .regex(/^(client_ip|header:[A-Za-z0-9!#$%&'*+.^_`|~-]+)$/, 'expected client_ip or header:NAME')
    .prefault(def('listeners[].rate_limit.key')),
  max_keys: count(1, 10_000_000).prefault(def('listeners[].rate_limit.max_keys')),
});

/** `redirect.to`: literal text and the placeholders of src/http/local-reply.ts. */
const redirectTarget = z
  .string()
  .min(1)
  .superRefine((text, ctx) => {
    const parts = parseTemplate(text);
    if (typeof parts === 'string') ctx.addIssue({ code: 'custom', message: parts });
  })
  .pipe(fieldValue);

const httpRoute = z.strictObject({
  match: z
    .strictObject({
      host: z
        .string()
        .regex(/^(\*\.)?[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.]+\]$/, 'expected a host name, *.suffix or [IPv6]')
        .optional(),
      path_prefix: z.string().startsWith('/').prefault(def('listeners[].routes[].match.path_prefix')),
      headers: z.record(fieldName, fieldValue).optional(),
      methods: z
        .array(z.string().regex(/^[A-Z][A-Z0-9_-]{0,31}$/, 'a method in capitals: GET, POST, PURGE'))
        .min(1)
        .optional(),
    })
    .prefault({}),
  upstream: z.string().min(1).optional(), // one of upstream, redirect, respond (cross-check.ts)
  redirect: z
    .strictObject({
      to: redirectTarget,
      status: z
        .union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)])
        .prefault(def('listeners[].routes[].redirect.status')),
    })
    .optional(),
  respond: z
    .strictObject({
      status: count(200, 599).prefault(def('listeners[].routes[].respond.status')),
      body: z.string().max(65536).prefault(def('listeners[].routes[].respond.body')),
      content_type: fieldValue.prefault(def('listeners[].routes[].respond.content_type')),
    })
    .optional(),
  strip_prefix: z.boolean().prefault(def('listeners[].routes[].strip_prefix')),
  headers: z.strictObject({ request: headerRules, response: headerRules }).prefault({}),
  max_body: size.optional(),
  rate_limit: z.union([z.literal('off'), rateLimit]).optional(),
  clients: clientAccess,
  timeouts: z.strictObject({ response_header: duration.optional(), idle: duration.optional() }).optional(),
});

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
    real_ip_header: z
      .preprocess(
        (v) => (typeof v === 'string' ? v.toLowerCase() : v),
        z.enum(['x-forwarded-for', 'x-real-ip']),
      )
      .meta(
        inputAlso({
          type: 'string',
          pattern: '^[Xx]-([Ff][Oo][Rr][Ww][Aa][Rr][Dd][Ee][Dd]-[Ff][Oo][Rr]|[Rr][Ee][Aa][Ll]-[Ii][Pp])$',
        }),
      )
      .optional(),
    client_fin: z.enum(['abort', 'finish']).prefault(def('listeners[].client_fin')),
    h2c: z.boolean().optional(), // http only (cross-check.ts); on unless false
    merge_slashes: z.boolean().prefault(def('listeners[].merge_slashes')),
    tls: tlsSettings.optional(),
    timeouts: z
      .strictObject({
        client_header: duration.prefault(def('listeners[].timeouts.client_header')),
        client_idle: duration.prefault(HTTP_CLIENT_IDLE_DEFAULT as never),
        drain_idle: duration.prefault(def('listeners[].timeouts.drain_idle')),
      })
      .prefault({}),
    limits: z
      .strictObject({
        max_connections: count(1, 10_000_000).prefault(def('listeners[].limits.max_connections')),
        max_connections_per_client: count(0, 10_000_000).prefault(
          def('listeners[].limits.max_connections_per_client'),
        ),
        max_header_bytes: size.prefault(def('listeners[].limits.max_header_bytes')),
        max_body_replay: size.prefault(def('listeners[].limits.max_body_replay')),
        max_body: size.optional(),
      })
      .prefault({}),
    native: z.enum(['auto', 'off']).prefault(def('listeners[].native')),
    proxy_protocol: proxyProtocol,
    clients: clientAccess,
    rate_limit: rateLimit.optional(),
  });
}

const httpListener = httpListenerOf('http');
const httpsListener = httpListenerOf('https');

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
        max_connections_per_client: count(0, 10_000_000).prefault(
          def('listeners[].limits.max_connections_per_client'),
        ),
      })
      .prefault({}),
    clients: clientAccess,
    proxy_protocol: proxyProtocol,
  });
}

const shmBridge = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'use 1–64 letters, digits, _ . -'),
  segment: z.string().regex(/^\/[A-Za-z0-9_.-]{1,200}$/, 'a POSIX shared-memory name: /name'),
  snapshot_capacity: sizeIn(
    SHM_LIMITS.capacity.min,
    SHM_LIMITS.capacity.max,
    SHM_LIMITS.capacity.text,
  ).prefault(def('shm[].snapshot_capacity')),
  upload_buffer: sizeIn(1, 4 * 1024 * 1024 * 1024, 'expected 1 B to 4GiB').prefault(
    def('shm[].upload_buffer'),
  ),
  slots: count(SHM_LIMITS.slots.min, SHM_LIMITS.slots.max)
    .refine((n) => (n & (n - 1)) === 0, SHM_LIMITS.slots.text)
    .prefault(def('shm[].slots')),
  slot_size: size
    .refine(
      (n) => n >= SHM_LIMITS.slotSize.min && n % 16 === 0 && n <= SHM_LIMITS.slotSize.max,
      SHM_LIMITS.slotSize.text,
    )
    .prefault(def('shm[].slot_size')),
  http: hostPort.prefault(def('shm[].http')),
  max_connections: count(1, 1_000_000).prefault(def('shm[].max_connections')),
  create: z.boolean().prefault(def('shm[].create')),
  allow_other_owner: z.boolean().prefault(def('shm[].allow_other_owner')),
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
        .meta(inputAlso({ type: 'integer' }))
        .prefault(def('admin.listen')),
      token: z.string().prefault(def('admin.token')),
      max_connections: count(1, 1_000_000).prefault(def('admin.max_connections')),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['trace', 'debug', 'info', 'warn', 'error']).prefault(def('log.level')),
      access: z
        .string()
        .min(1)
        // `access: on` (YAML 1.2 reads it as the string "on") would append to a file named "on"
        .refine(
          (v) => !/^(on|true|yes)$/i.test(v),
          'a destination: stdout, stderr, off, or a file path (./on for a file so named)',
        )
        .prefault(def('log.access')),
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
