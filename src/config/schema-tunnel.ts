/** The `tunnel` section of the config schema (schema.ts, which it is part of): relay and agent. */
import { z } from 'zod';
import { normalizeFingerprint } from '../tunnel/tls.js';
import { def } from './reference.js';
import {
  allowEntry,
  cidr,
  count,
  duration,
  hostPort,
  inputAlso,
  knownCiphers,
  listenAddress,
  receiveBuffer,
  sizeIn,
} from './schema-values.js';

export const heartbeat = z
  .strictObject({
    interval: duration.prefault(def('tunnel.relay.heartbeat.interval')),
    misses: count(1, 100).prefault(def('tunnel.relay.heartbeat.misses')),
  })
  .prefault({});

export const tunnelLimits = z
  .strictObject({
    max_streams: count(1, 1_000_000).prefault(def('tunnel.relay.limits.max_streams')),
    session_window: sizeIn(65_536, 0x7fff_ffff, '64KiB – 2GiB').prefault(
      def('tunnel.relay.limits.session_window'),
    ),
    stream_window: sizeIn(16_384, 0x7fff_ffff, '16KiB – 2GiB').prefault(
      def('tunnel.relay.limits.stream_window'),
    ),
    max_stream_window: sizeIn(16_384, 0x7fff_ffff, '16KiB – 2GiB').prefault(
      def('tunnel.relay.limits.max_stream_window'),
    ),
    max_payload: sizeIn(1024, 65_536, '1KiB – 64KiB').prefault(def('tunnel.relay.limits.max_payload')),
  })
  .prefault({});

export const tunnelToken = z.string().min(16, 'tokens must be at least 16 characters (use ${ENV} or a file)');

export const tunnelRelay = z.strictObject({
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
  proxy_protocol: z
    .strictObject({
      from: z.array(cidr).min(1, 'name the load balancers that send the header'),
      timeout: duration.prefault(def('tunnel.relay.proxy_protocol.timeout')),
    })
    .optional(),
  clients: z
    .strictObject({
      allow: z.array(cidr).prefault(def('tunnel.relay.clients.allow')),
      deny: z.array(cidr).prefault(def('tunnel.relay.clients.deny')),
    })
    .optional(),
});

export const relayRef = z
  .preprocess(
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
  )
  .meta(inputAlso({ type: 'string' }));

const UDP_FORWARD_RECEIVE_BUFFER = receiveBuffer.parse(def('tunnel.agent.forwards[].receive_buffer'));

export const forward = z
  .strictObject({
    listen: listenAddress,
    to: hostPort,
    protocol: z.enum(['tcp', 'udp']).prefault(def('tunnel.agent.forwards[].protocol')),
    receive_buffer: receiveBuffer.optional(),
  })
  .refine((f) => f.protocol === 'udp' || f.receive_buffer === undefined, {
    message: 'receive_buffer is for udp forwards (a tcp forward has no use for it)',
    path: ['receive_buffer'],
  })
  .transform((f) => ({
    ...f,
    receive_buffer: f.receive_buffer ?? (f.protocol === 'udp' ? UDP_FORWARD_RECEIVE_BUFFER : 0),
  }));

export const tunnelAgent = z.strictObject({
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
  max_connections: count(1, 10_000_000).prefault(def('tunnel.agent.max_connections')),
  forwards: z.array(forward).prefault([]),
  socks5: listenAddress.optional(),
  http_proxy: listenAddress.optional(),
  limits: tunnelLimits,
  native: z.enum(['auto', 'off']).prefault(def('tunnel.agent.native')),
});
