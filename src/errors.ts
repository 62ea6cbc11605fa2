/**
 * The one errors module. Every failure zipline reports carries a stable `code` from the catalog
 * below; callers match on `code`, never on message text. Codes are never reused or renamed.
 * `docs/ERRORS.md` is generated from `ERROR_CATALOG` and a test keeps the two identical.
 */

export interface ErrorSpec {
  /** HTTP status used when this failure ends an HTTP request (0: not HTTP-facing). */
  readonly status: number;
  /** One line for the docs table. */
  readonly description: string;
}

export const ERROR_CATALOG = {
  // configuration and process
  ZL_CONFIG_INVALID: {
    status: 0,
    description: 'The configuration failed validation; every problem is listed.',
  },
  ZL_CONFIG_READ: { status: 0, description: 'The configuration file could not be read or parsed as YAML.' },
  ZL_LISTEN_FAILED: { status: 0, description: 'A listener could not bind its address (in use, permission).' },
  ZL_RELOAD_REFUSED: {
    status: 0,
    description: 'A reload was refused (invalid config, draining); the running configuration is kept.',
  },
  ZL_UPGRADE_FAILED: {
    status: 0,
    description:
      'An upgrade (SIGUSR2, `POST /upgrade`) was refused (Windows, shm bridges, draining, one already running) or its new process did not start serving; the running process goes on as before.',
  },
  ZL_DRAIN_TIMEOUT: {
    status: 503,
    description:
      'Connections still open at `drain_timeout` were closed; their access lines carry the code (HTTP: status 503 when no response head had been sent).',
  },
  ZL_ACCESS_LOG_WRITE: {
    status: 0,
    description:
      'The access log could not be written (disk full, a removed directory, a closed pipe). Its lines wait in a bounded buffer and are retried; beyond 8 MiB they are dropped and counted (`zipline_log_dropped_total`). Logged at most once every 10 s; serving goes on.',
  },
  // worker processes (`workers` > 1)
  ZL_WORKERS_UNAVAILABLE: {
    status: 0,
    description:
      '`workers` > 1 needs SO_REUSEPORT and the native module (Linux, built by `npm install`); use `workers: 1` elsewhere.',
  },
  ZL_WORKER_EXITED: {
    status: 0,
    description:
      'A worker process exited unexpectedly (crash, signal); the primary starts a new one with backoff.',
  },
  ZL_WORKER_UNRESPONSIVE: {
    status: 0,
    description:
      'A worker did not answer the primary in time (stats, metrics, reload, start); reported in `/stats` and the reload result.',
  },
  // upstream selection and connection (a closed set)
  ZL_UPSTREAM_UNAVAILABLE: { status: 503, description: 'No server of the upstream is available (all down).' },
  ZL_UPSTREAM_OVER_LIMIT: {
    status: 503,
    description: 'Every available server is at `max_connections`, or the upstream is at its cap.',
  },
  ZL_UPSTREAM_CONNECT_TIMEOUT: {
    status: 504,
    description: 'Connecting to the server took longer than `timeouts.connect`.',
  },
  ZL_UPSTREAM_CONNECT_REFUSED: {
    status: 502,
    description: 'The server refused the connection (RST to SYN).',
  },
  ZL_UPSTREAM_TLS: {
    status: 502,
    description:
      'The TLS handshake with a server (`upstreams.*.tls`) failed: its certificate is not trusted or does not name `server_name`, it asked for a client certificate, or no common protocol. Counted against the server like a refused connect.',
  },
  ZL_UPSTREAM_CONNECT_FAILED: {
    status: 502,
    description: 'Connecting failed for another reason (unreachable, DNS).',
  },
  ZL_LOCAL_EXHAUSTED: {
    status: 503,
    description:
      'zipline itself ran out of something connecting upstream: file descriptors (EMFILE, ENFILE: raise `ulimit -n` / LimitNOFILE), local ports (EADDRNOTAVAIL: widen net.ipv4.ip_local_port_range, keep upstream connections alive) or kernel buffers (ENOBUFS, ENOMEM). Not held against the server: no passive-health or circuit-breaker failure, no retry.',
  },
  ZL_UPSTREAM_RESET: { status: 502, description: 'The server reset an established connection.' },
  ZL_UPSTREAM_BAD_RESPONSE: {
    status: 502,
    description:
      'The server sent a malformed or ambiguous response head (RFC 9112), or more than 64 KiB of 1xx heads before its final one; its connection is not reused.',
  },
  ZL_UPSTREAM_PREMATURE_CLOSE: {
    status: 502,
    description:
      'The server closed the connection before a complete response (before the head: 502; mid-body: the client connection is aborted so the truncated body is never presented as complete).',
  },
  ZL_UPSTREAM_RESPONSE_TIMEOUT: {
    status: 504,
    description: 'No response head within `timeouts.response_header` of the request being sent.',
  },
  ZL_UPSTREAM_IDLE_TIMEOUT: {
    status: 504,
    description: 'No bytes either way for `timeouts.idle` while a request or response body was streaming.',
  },
  ZL_CIRCUIT_OPEN: {
    status: 503,
    description: 'The upstream circuit breaker is open (too many recent failures); requests fail fast.',
  },
  ZL_UPSTREAM_PENDING_LIMIT: {
    status: 503,
    description:
      'The upstream is at `circuit_breaker.max_connections` and `max_pending` requests already wait.',
  },
  // downstream
  ZL_CLIENT_ABORTED: {
    status: 499,
    description:
      'HTTP: the client closed its connection before the response was complete (logged as 499). socks5/http_proxy entries: the client closed it before its handshake was complete.',
  },
  ZL_CLIENT_RESET: { status: 499, description: 'The client reset its connection.' },
  ZL_CLIENT_IDLE_TIMEOUT: {
    status: 408,
    description:
      'The client was idle for longer than `timeouts.client_idle`. HTTP: also a client that took no byte of its response for that long (nginx `send_timeout`); its connection is reset, so what it left unread is dropped.',
  },
  ZL_LISTENER_OVER_LIMIT: {
    status: 503,
    description: 'The listener is at `limits.max_connections`; the new one was closed.',
  },
  ZL_DRAINING: { status: 503, description: 'The process is draining; no new work is accepted.' },
  ZL_CLIENT_CONNECTION_LIMIT: {
    status: 503,
    description:
      'The client already has `limits.max_connections_per_client` connections open to this listener; the new one was closed without a reply.',
  },
  ZL_CLIENT_DENIED: {
    status: 403,
    description:
      "The client's address is refused by `clients` (on `deny`, or not on a non-empty `allow`): a listener's (or the relay's) closes the connection without a reply or drops the datagram; a route's answers 403.",
  },
  ZL_PROXY_PROTOCOL: {
    status: 400,
    description:
      'A connection from a `proxy_protocol.from` peer did not begin with a valid PROXY protocol header (v1 or v2); it was closed without a reply.',
  },
  ZL_PROXY_PROTOCOL_TIMEOUT: {
    status: 408,
    description:
      'A `proxy_protocol.from` peer sent no complete PROXY protocol header within `proxy_protocol.timeout`; the connection was closed.',
  },
  // the native data path (Linux)
  ZL_PUMP: {
    status: 0,
    description:
      'The native data path could not start its thread (epoll, eventfd, the thread itself) or take a socket (not duplicated, out of memory). TCP connections, HTTP accepts and bodies then use the JavaScript data path; a native UDP listener fails to start with ZL_LISTEN_FAILED.',
  },
  // UDP
  ZL_UDP_SESSION_LIMIT: {
    status: 0,
    description: 'The UDP listener is at `udp.max_sessions`; the datagram was dropped.',
  },
  ZL_UDP_QUEUE_FULL: {
    status: 0,
    description: 'A UDP session queued more datagrams than `udp.max_queue` while connecting; dropped.',
  },
  ZL_UDP_RECEIVE_BUFFER_FULL: {
    status: 0,
    description:
      "Datagrams the kernel dropped before zipline read them: the listening socket's receive buffer was full (raise `udp.receive_buffer`, and `net.core.rmem_max` which caps it). Counted at scrape time from /proc/net/udp (Linux).",
  },
  ZL_UDP_SEND_FAILED: {
    status: 0,
    description: 'Sending a datagram failed (ICMP unreachable, buffer full).',
  },
  // HTTP message parsing (the connection is closed after the response)
  ZL_HTTP_BAD_REQUEST: {
    status: 400,
    description:
      'Malformed or ambiguous request framing (RFC 9112): bare CR/LF, obs-fold, CL+TE, conflicting lengths, bad chunk.',
  },
  ZL_HTTP2_RESET_FLOOD: {
    status: 0,
    description:
      'An HTTP/2 client reset more than half of its streams before their responses ended, after at least 100 (the "rapid reset" attack, CVE-2023-44487): its connection is closed with GOAWAY ENHANCE_YOUR_CALM, as Envoy does.',
  },
  ZL_HTTP2_PROTOCOL: {
    status: 0,
    description:
      'An HTTP/2 client broke the protocol or one of its flood limits (nghttp2 and Node: SETTINGS or PING floods whose acknowledgements it does not read, more than 1,000 invalid or empty frames, a header block of endless CONTINUATION frames, a malformed frame): the connection is closed and its open streams end as client aborts.',
  },
  ZL_HTTP_PLAIN_ON_TLS: {
    status: 400,
    description:
      'A plain-HTTP request on an https listener (OpenSSL recognises GET, POST, HEAD, PUT and CONNECT): answered in plain text and closed, as nginx and Go servers do.',
  },
  ZL_HTTP_HEADERS_TOO_LARGE: {
    status: 431,
    description: 'The request head exceeds `limits.max_header_bytes` (or 200 fields).',
  },
  ZL_HTTP_URI_TOO_LONG: {
    status: 414,
    description:
      'The request line alone exceeds `limits.max_header_bytes` (nginx answers 414 for a request line over its buffer too).',
  },
  ZL_HTTP_RATE_LIMITED: {
    status: 429,
    description:
      'The client (or the key of `rate_limit.key`) is over the `rate_limit` of its route or listener; answered with `Retry-After`, no server was asked.',
  },
  ZL_HTTP_BODY_TOO_LARGE: {
    status: 413,
    description:
      'The request body exceeds `max_body` of its route or listener (by its Content-Length, before any of it is read or sent on; or, chunked, as it arrives).',
  },
  ZL_HTTP_HEADER_TIMEOUT: {
    status: 408,
    description:
      'The request head (or TLS handshake) was not complete within `timeouts.client_header`; socks5/http_proxy entries: the SOCKS5 greeting and request or the proxy request head.',
  },
  ZL_HTTP_NO_ROUTE: { status: 404, description: 'No route of the listener matches the host and path.' },
  ZL_HTTP_BODY_TIMEOUT: {
    status: 408,
    description:
      'The client sent no request body bytes for `timeouts.client_idle` while the body was incomplete and zipline was reading it (a body the server stops taking is `ZL_UPSTREAM_IDLE_TIMEOUT`).',
  },
  ZL_HTTP_NOT_IMPLEMENTED: {
    status: 501,
    description:
      'A request zipline does not implement (RFC 9110 §9.1, RFC 9112 §6.1): the CONNECT method, or a Transfer-Encoding other than exactly `chunked`.',
  },
  ZL_HTTP_VERSION_NOT_SUPPORTED: {
    status: 505,
    description: 'An HTTP version other than 1.0 and 1.1 on an HTTP/1 connection.',
  },
  ZL_TLS_CONFIG: {
    status: 0,
    description:
      "A certificate or key of an https listener or the tunnel relay could not be read or does not match, or the relay's `state_dir` is not writable for its `tls: auto` certificate.",
  },
  // shared memory
  ZL_SHM_UNAVAILABLE: {
    status: 0,
    description:
      'The shared-memory addon is not available (not Linux, or `npm install` could not build it); the rest of zipline runs.',
  },
  ZL_SHM_ATTACH: {
    status: 502,
    description:
      'A segment could not be opened or attached: missing, not a zipline segment, another version or other sizes, or served by another zipline. At start zipline does not run; later (a peer replaced the segment with one zipline cannot attach to) `/shm` answers 502 until it can.',
  },
  ZL_SHM_NOT_FOUND: { status: 404, description: 'No shared-memory bridge of that name.' },
  ZL_SHM_BAD_REQUEST: { status: 400, description: 'A malformed HTTP request to the `/shm` API.' },
  ZL_SHM_REQUEST_TIMEOUT: {
    status: 408,
    description:
      'A request to the `/shm` API whose head did not arrive within 10 s (or the whole request within 120 s).',
  },
  ZL_SHM_SEND_TIMEOUT: {
    status: 0,
    description:
      'A `/shm` API client took no byte of its response for 30–60 s (nginx `send_timeout`); its connection was reset.',
  },
  ZL_SHM_TOO_LARGE: {
    status: 413,
    description: 'The body is larger than the snapshot capacity (or a ring slot, for messages).',
  },
  ZL_SHM_PRECONDITION: {
    status: 412,
    description:
      '`If-Match` names a version that is no longer the current one, or an ETag of a segment that was replaced since.',
  },
  ZL_SHM_BUSY: {
    status: 503,
    description:
      'The snapshot lock is held by a live writer beyond a ~2 ms spin, the ring to C is full, or the uploads being received already hold `shm[].upload_buffer`; retry.',
  },
  ZL_SHM_CORRUPT: {
    status: 502,
    description:
      'A peer wrote the segment outside the protocol: the published snapshot is malformed (answered 502 until the next write replaces it), C → Node ring slots were skipped (`zipline_shm_corrupt_total`), or the segment was truncated under zipline (the bridge answers 502 until a restart).',
  },
  // tunnel
  ZL_TUNNEL_CLOSED: {
    status: 0,
    description: 'The tunnel session ended (or is going away): its streams end, new streams are refused.',
  },
  ZL_TUNNEL_RESET: {
    status: 0,
    description: 'The peer reset the tunnel stream (RST; its code is in `tunnelCode`).',
  },
  ZL_TUNNEL_OPEN_REFUSED: {
    status: 0,
    description: 'The peer answered OPEN with a non-zero status (SOCKS5 reply meaning, in `openStatus`).',
  },
  ZL_TUNNEL_AUTH_FAILED: {
    status: 0,
    description:
      'The relay refused the agent (wrong token, stale or replayed HELLO, or too many failures from that address): GOAWAY AUTH_FAILED.',
  },
  ZL_TUNNEL_HANDSHAKE: {
    status: 0,
    description: 'No valid HELLO / HELLO_ACK within the handshake timeout (10 s), or a malformed one.',
  },
  ZL_TUNNEL_TLS: {
    status: 0,
    description:
      "The tunnel's TLS handshake failed: timeout, or the relay's certificate matches neither the pinned fingerprint nor the CA.",
  },
  ZL_TUNNEL_PROTOCOL: {
    status: 0,
    description:
      'A tunnel session ended on a protocol error (bad magic, CRC, size, flow control); the GOAWAY code is logged and counted.',
  },
  ZL_TUNNEL_NO_RELAY: {
    status: 0,
    description: 'No relay session was up within `connect_timeout` to carry a new stream.',
  },
  ZL_TUNNEL_NOT_ALLOWED: {
    status: 0,
    description: "The destination is not on the relay's `allow` list (OPEN_ACK 2, SOCKS5 reply 2, HTTP 403).",
  },
  ZL_TUNNEL_DIAL_FAILED: {
    status: 0,
    description:
      'The relay could not reach the destination (refused, unreachable, timeout: the OPEN_ACK status says which).',
  },
  ZL_DNS_BUSY: {
    status: 0,
    description:
      'A destination name was not looked up: its client already had 64 lookups waiting, or 1,024 waited in all (docs/TUNNEL.md, "Destination names"). SOCKS5 reply / OPEN_ACK 1, HTTP 502.',
  },
  ZL_TUNNEL_LIMIT: {
    status: 0,
    description:
      "A session's stream cap (`max_streams`) or the relay's session cap was reached: RST REFUSED_STREAM / GOAWAY ENHANCE_YOUR_CALM.",
  },
  ZL_TUNNEL_VIA: {
    status: 0,
    description:
      'The egress proxy (`via`: HTTP CONNECT or SOCKS5) refused or failed the connection to the relay.',
  },
  ZL_TUNNEL_CODEC_UNAVAILABLE: {
    status: 0,
    description:
      '`compression: zstd` was asked for but the optional `zstd-napi` module is not installed; the tunnel runs uncompressed.',
  },
  ZL_TUNNEL_NATIVE: {
    status: 0,
    description:
      'The native tunnel engine could not take a connection or start (a descriptor not duplicated, out of memory); that connection fails, the others go on.',
  },
  ZL_PROXY_BAD_REQUEST: {
    status: 400,
    description:
      "A SOCKS5 or HTTP-proxy client sent a malformed or unsupported request (the entry answers with the protocol's error and closes).",
  },
  // admin
  ZL_ADMIN_UNAUTHORIZED: { status: 401, description: 'The admin token was missing or wrong.' },
  ZL_ADMIN_FORBIDDEN: {
    status: 403,
    description:
      'With no `admin.token`, `POST /reload` and `/debug/profile` are answered only to this host (loopback); set a token to call them from elsewhere.',
  },
  ZL_ADMIN_NOT_FOUND: { status: 404, description: 'No such admin endpoint.' },
  ZL_ADMIN_METHOD_NOT_ALLOWED: {
    status: 405,
    description: 'An admin endpoint asked with a method it does not take (its `Allow` header says which).',
  },
  ZL_ADMIN_BAD_REQUEST: { status: 400, description: 'The admin request was malformed.' },
  ZL_ADMIN_REQUEST_TIMEOUT: {
    status: 408,
    description: 'The admin request head did not arrive within 10 s (or the whole request within 70 s).',
  },
  ZL_ADMIN_SEND_TIMEOUT: {
    status: 0,
    description:
      'An admin client took no byte of its response for 30–60 s (nginx `send_timeout`); its connection was reset.',
  },
  ZL_ADMIN_BUSY: { status: 409, description: 'Another CPU profile is being taken; one at a time.' },
  ZL_INTERNAL: { status: 500, description: 'A bug: an unexpected exception. It is logged with its stack.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CATALOG;

export class ZiplineError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ZiplineError';
    this.code = code;
  }
  get status(): number {
    return ERROR_CATALOG[this.code].status;
  }
}

export function isZiplineError(err: unknown): err is ZiplineError {
  return err instanceof ZiplineError;
}

/** The one mapping from a socket-level error of an upstream connect to a coded failure. */
/** errno codes of a shortage on zipline's side (descriptors, local ports, kernel memory). */
const LOCAL_EXHAUSTION = new Set(['EMFILE', 'ENFILE', 'EADDRNOTAVAIL', 'ENOBUFS', 'ENOMEM']);

/** Whether a socket failed for want of something local, which says nothing about its peer. */
export function isLocalExhaustion(errno: string | undefined): boolean {
  return errno !== undefined && LOCAL_EXHAUSTION.has(errno);
}

export function upstreamConnectCode(err: NodeJS.ErrnoException | undefined, overTls = false): ErrorCode {
  if (err === undefined) return 'ZL_UPSTREAM_CONNECT_FAILED';
  if (isZiplineError(err)) return err.code;
  // on a TLS socket a system call's errno is the TCP connection's; anything else is TLS's
  // (a failed handshake, an alert from the server)
  if (overTls && err.syscall === undefined) return 'ZL_UPSTREAM_TLS';
  if (isLocalExhaustion(err.code)) return 'ZL_LOCAL_EXHAUSTED';
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'ZL_UPSTREAM_CONNECT_REFUSED';
    case 'ETIMEDOUT':
      return 'ZL_UPSTREAM_CONNECT_TIMEOUT';
    default:
      return 'ZL_UPSTREAM_CONNECT_FAILED';
  }
}

/** Renders docs/ERRORS.md; `test/unit/docs.test.ts` fails when the committed file differs. */
export function renderErrorsDoc(): string {
  const rows = Object.entries(ERROR_CATALOG).map(
    ([code, spec]) => `| \`${code}\` | ${spec.status === 0 ? '—' : spec.status} | ${spec.description} |`,
  );
  return [
    '# Error codes',
    '',
    '<!-- generated from src/errors.ts by `npm run docs`; do not edit by hand -->',
    '',
    'Every failure zipline reports carries one of these stable codes: in access-log lines (`error`),',
    'in the `code` label of error metrics, in admin responses, and (from the HTTP proxy) in the',
    '`x-zipline-error` response header. Codes are never reused or renamed.',
    '',
    '| code | HTTP status | meaning |',
    '|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}
