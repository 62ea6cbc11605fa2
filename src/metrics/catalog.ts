/**
 * The one metrics catalog. Every metric zipline exports is declared here, once; code takes
 * pre-bound children (`.labels(...)` at compile time) so the hot path only adds numbers.
 * `docs/METRICS.md` is generated from `METRIC_DOCS` and a test keeps it in step.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { FastHistogram } from './fast-histogram.js';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'zipline_' });
// prom-client names three gauges with the `_total` suffix Prometheus keeps for counters (`promtool
// check metrics` flags them); their figures stay, by type, in zipline_nodejs_active_{handles,requests,resources}
for (const what of ['handles', 'requests', 'resources']) {
  registry.removeSingleMetric(`zipline_nodejs_active_${what}_total`);
}

interface MetricDoc {
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  readonly labels: readonly string[];
  readonly help: string;
}
export const METRIC_DOCS: MetricDoc[] = [];

function counter<L extends string>(name: string, help: string, labels: readonly L[]): Counter<L> {
  METRIC_DOCS.push({ name, type: 'counter', labels, help });
  return new Counter({ name, help, labelNames: labels, registers: [registry] });
}
/**
 * With `workers` > 1 the primary sums every process's series (`aggregate.ts`); a state gauge
 * names another `aggregator` (`min`: healthy only if every worker says so, `max`: open in any).
 */
function gauge<L extends string>(
  name: string,
  help: string,
  labels: readonly L[],
  aggregator: 'sum' | 'min' | 'max' = 'sum',
): Gauge<L> {
  METRIC_DOCS.push({ name, type: 'gauge', labels, help });
  return new Gauge({ name, help, labelNames: labels, registers: [registry], aggregator });
}
function histogram<L extends string>(
  name: string,
  help: string,
  labels: readonly L[],
  buckets: number[],
): Histogram<L> {
  METRIC_DOCS.push({ name, type: 'histogram', labels, help });
  return new Histogram({ name, help, labelNames: labels, buckets, registers: [registry] });
}

function fastHistogram<L extends string>(
  name: string,
  help: string,
  labels: readonly L[],
  buckets: number[],
): FastHistogram<L> {
  METRIC_DOCS.push({ name, type: 'histogram', labels, help });
  return new FastHistogram(name, help, labels, buckets, registry);
}

const LATENCY_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];
const SESSION_BUCKETS = [0.001, 0.01, 0.1, 1, 10, 60, 600, 3600];

export const metrics = {
  // downstream
  downstreamActive: gauge(
    'zipline_downstream_connections_active',
    'Open client connections (UDP: sessions; http/https listeners too since 2026-12-07, HTTP/2 ones included).',
    ['listener'],
  ),
  downstreamTotal: counter(
    'zipline_downstream_connections_total',
    'Accepted client connections (UDP: sessions).',
    ['listener'],
  ),
  downstreamRejected: counter(
    'zipline_downstream_rejected_total',
    'Connections or datagrams refused by a listener limit, drain, or descriptors running out (ZL_LOCAL_EXHAUSTED); listener "admin" and "shm.http" for the admin and /shm servers at their max_connections.',
    ['listener', 'code'],
  ),
  acceptErrors: counter(
    'zipline_accept_errors_total',
    'Accepts that failed for want of descriptors or memory (by errno: EMFILE, ENFILE, ENOBUFS, ENOMEM); each pauses the native acceptor for 250 ms.',
    ['listener', 'code'],
  ),
  downstreamBytes: counter(
    'zipline_downstream_bytes_total',
    'Bytes to (tx) and from (rx) clients, added as each connection ends (http/https: after TLS, since 2026-12-07).',
    ['listener', 'direction'],
  ),
  connectionErrors: counter(
    'zipline_connection_errors_total',
    'Connections or sessions that ended with an error code.',
    ['listener', 'code'],
  ),
  sessionDuration: histogram(
    'zipline_session_duration_seconds',
    'L4 connection and UDP session lifetimes.',
    ['listener'],
    SESSION_BUCKETS,
  ),
  udpDatagrams: counter(
    'zipline_udp_datagrams_total',
    'UDP datagrams relayed (rx from client, tx to client).',
    ['listener', 'direction'],
  ),
  udpDropped: counter('zipline_udp_dropped_total', 'UDP datagrams dropped, by reason code.', [
    'listener',
    'code',
  ]),
  // HTTP
  requestsActive: gauge(
    'zipline_requests_active',
    'HTTP requests in flight (an upgraded WebSocket session until it closes).',
    ['listener'],
  ),
  requestDuration: fastHistogram(
    'zipline_request_duration_seconds',
    'HTTP request duration (an upgraded WebSocket session: its length, in the 1xx class).',
    ['listener', 'route', 'upstream', 'code_class'],
    LATENCY_BUCKETS,
  ),
  httpErrors: counter(
    'zipline_http_errors_total',
    'HTTP requests that ended with an error code (parse errors, timeouts, upstream failures, client aborts).',
    ['listener', 'code'],
  ),
  // upstreams
  upstreamRequests: counter(
    'zipline_upstream_requests_total',
    'HTTP requests sent upstream, by whether the pooled connection was new or reused.',
    ['upstream', 'connection'],
  ),
  retriesRefused: counter(
    'zipline_retries_refused_total',
    'Retries not made although the policy allowed one: the retry budget was spent.',
    ['upstream'],
  ),
  upstreamHealthy: gauge(
    'zipline_upstream_server_healthy',
    '1 when the server endpoint is in rotation (with workers: in every worker).',
    ['upstream', 'server'],
    'min',
  ),
  upstreamActive: gauge('zipline_upstream_connections_active', 'Open connections to a server endpoint.', [
    'upstream',
    'server',
  ]),
  upstreamConnectFailures: counter('zipline_upstream_connect_failures_total', 'Failed connects, by code.', [
    'upstream',
    'server',
    'code',
  ]),
  upstreamConnectDuration: histogram(
    'zipline_upstream_connect_duration_seconds',
    'Time to connect to a server (with `tls`: until the handshake is done).',
    ['upstream'],
    LATENCY_BUCKETS,
  ),
  upstreamUnavailable: counter(
    'zipline_upstream_unavailable_total',
    'Picks that found no server (all down or at their limits).',
    ['upstream', 'code'],
  ),
  healthChecks: counter('zipline_health_checks_total', 'Active health check outcomes.', [
    'upstream',
    'result',
  ]),
  retries: counter('zipline_retries_total', 'Extra attempts on another (or the same) server.', ['upstream']),
  circuitOpen: gauge(
    'zipline_circuit_open',
    '1 while the upstream circuit breaker is open (with workers: in any worker).',
    ['upstream'],
    'max',
  ),
  dnsResolutions: counter('zipline_dns_resolutions_total', 'Server host name resolutions.', [
    'upstream',
    'result',
  ]),
  // tunnel (issue 4)
  tunnelSessions: gauge('zipline_tunnel_sessions_active', 'Tunnel sessions.', ['role']),
  tunnelFrames: counter('zipline_tunnel_frames_total', 'Tunnel frames.', ['type', 'direction']),
  tunnelProtocolErrors: counter(
    'zipline_tunnel_protocol_errors_total',
    'Tunnel sessions ended by a protocol error.',
    ['code'],
  ),
  tunnelRtt: gauge('zipline_tunnel_rtt_seconds', 'Smoothed PING round trip per relay.', ['relay']),
  tunnelStreams: gauge('zipline_tunnel_streams_active', 'Open tunnel streams.', ['role']),
  tunnelRelayUp: gauge('zipline_tunnel_relay_up', '1 while the agent has a session with this relay.', [
    'relay',
  ]),
  tunnelRelayScore: gauge(
    'zipline_tunnel_relay_score',
    "The agent's adaptive score of a relay (lower is better; docs/TUNNEL.md).",
    ['relay'],
  ),
  tunnelReconnects: counter('zipline_tunnel_reconnects_total', 'Agent session attempts by result.', [
    'relay',
    'result',
  ]),
  tunnelAuthFailures: counter(
    'zipline_tunnel_auth_failures_total',
    'Relay: agents refused (bad_proof, malformed, rate_limited).',
    ['reason'],
  ),
  tunnelRejected: counter(
    'zipline_tunnel_rejected_total',
    'Relay: connections refused before a session (max_sessions, handshake_timeout, tls_handshake, handshake_displaced).',
    ['reason'],
  ),
  tunnelCompressedBytes: counter(
    'zipline_tunnel_compression_bytes_total',
    'DATA bytes offered to zstd (before) and sent (after) by the agent.',
    ['stage'],
  ),
  destinationLookups: counter(
    'zipline_destination_lookups_total',
    "Lookups of names clients asked to reach (relay, socks5, http_proxy): ok, failed (the resolver's answer), shared (joined a lookup of the same name), expired (its caller gave up before it started), busy (refused: too many waiting).",
    ['result'],
  ),
  destinationLookupDuration: histogram(
    'zipline_destination_lookup_duration_seconds',
    'Time the system resolver took for a name clients asked to reach.',
    [],
    LATENCY_BUCKETS,
  ),
  // shared memory (issue 5)
  shmMessages: counter('zipline_shm_messages_total', 'Shared-memory messages.', ['bridge', 'direction']),
  shmCorrupt: counter(
    'zipline_shm_corrupt_total',
    'Malformed shared-memory data a peer wrote (ZL_SHM_CORRUPT): C → Node ring slots skipped, snapshot reads refused, the segment truncated under zipline (`segment`).',
    ['bridge', 'part'],
  ),
  // process and config
  reloads: counter('zipline_config_reloads_total', 'Config reloads by result (applied, refused).', [
    'result',
  ]),
  draining: gauge('zipline_draining', '1 while the process drains before exit.', [], 'max'),
  workersRunning: gauge(
    'zipline_workers_running',
    'Worker processes serving traffic (`workers` > 1; 0 in a single-process run).',
    [],
  ),
  workerRestarts: counter(
    'zipline_worker_restarts_total',
    'Worker processes started again after an unexpected exit, by exit reason (code or signal).',
    ['reason'],
  ),
  logWriteErrors: counter(
    'zipline_log_write_errors_total',
    'Failed writes to a log (`access` or `process`: disk full, closed pipe, ...); the lines are kept and retried.',
    ['log'],
  ),
  logDropped: counter(
    'zipline_log_dropped_total',
    'Log lines dropped because the buffer in front of a slow or failing destination was full (access log 8 MiB, process log 1 MiB).',
    ['log'],
  ),
  internalErrors: counter(
    'zipline_internal_errors_total',
    'Uncaught exceptions (bugs); each is logged with its stack.',
    [],
  ),
} as const;

export function renderMetricsDoc(): string {
  const rows = METRIC_DOCS.map(
    (m) => `| \`${m.name}\` | ${m.type} | ${m.labels.map((l) => `\`${l}\``).join(', ') || '—'} | ${m.help} |`,
  );
  return [
    '# Metrics',
    '',
    '<!-- generated from src/metrics/catalog.ts by `npm run docs`; do not edit by hand -->',
    '',
    '`GET /metrics` on the admin server, Prometheus text format. Node process metrics are exported',
    'with the prefix `zipline_` (`zipline_process_*`, `zipline_nodejs_*`: CPU, memory, event-loop lag, GC, handles).',
    '',
    '| name | type | labels | meaning |',
    '|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}

/** The Prometheus text format `GET /metrics` answers in. */
export const METRICS_CONTENT_TYPE = registry.contentType;
