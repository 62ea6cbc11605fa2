/**
 * Every config key, its default and its meaning, in one place. The schema reads its defaults from
 * here (`def(path)`), `docs/CONFIG.md` is rendered from here, and a test walks the schema to make
 * sure every key it accepts has an entry here and every entry names a real key.
 *
 * Paths use `*` for a map entry (`upstreams.*`) and `[]` for an array element (`listeners[]`).
 */

import { SHM_REFERENCE } from './reference-shm.js';
import { TUNNEL_REFERENCE } from './reference-tunnel.js';

export interface KeyDoc {
  /** The default as a user would write it in YAML; `undefined` when the key is required or unset. */
  readonly default?: string | number | boolean | readonly (string | number)[];
  readonly doc: string;
}

export const CONFIG_REFERENCE = {
  admin: { doc: 'The admin server: health, readiness, stats, metrics, reload.' },
  'admin.listen': {
    default: '127.0.0.1:9901',
    doc: 'Address of the admin server. Loopback by default; port 0 picks one. A bare port (`9901` or `:9901`) is on loopback too; give `0.0.0.0:9901` to serve beyond this host (then set `admin.token`: without one, `run` warns and `check` says so).',
  },
  'admin.token': {
    default: '',
    doc: 'If set, every admin endpoint except `/healthz` requires `Authorization: Bearer TOKEN` (compared in constant time). Use `${ENV}` or `${file:PATH}`; never logged.',
  },
  'admin.max_connections': {
    default: 256,
    doc: 'Connections the admin server holds at once (HAProxy\'s `stats maxconn`); more are closed at once, counted as `ZL_LISTENER_OVER_LIMIT` in `zipline_downstream_rejected_total{listener="admin"}` and logged as a warning at most every 10 s, so a flood of connections to it cannot take the descriptors the proxy\'s listeners need. A reload applies it to new connections.',
  },
  log: { doc: 'Process and access logs.' },
  'log.level': {
    default: 'info',
    doc: 'Process log level: `trace` `debug` `info` `warn` `error`. Process logs go to stderr.',
  },
  'log.access': {
    default: 'stdout',
    doc: 'Access log: `stdout`, `stderr`, `off`, or a file path (appended). One JSON line per L4 connection, UDP session or HTTP request. `on`, `true` and `yes` are refused rather than taken as file names (`./on` for a file so named).',
  },
  workers: {
    default: 1,
    doc: 'Processes serving traffic: `1` (one process), a number, or `auto` (one per core). With more than one, a primary process runs the admin server, the tunnel and the shm bridges and supervises that many workers; each worker runs every listener and upstream on its own SO_REUSEPORT socket (Linux only). See OPERATIONS.md, "Workers".',
  },
  drain_timeout: {
    default: '30s',
    doc: 'On SIGTERM/SIGINT (and in the old process once an upgrade, SIGUSR2, has a new one serving): stop accepting, let open connections finish for this long, then close them and exit 0.',
  },
  upstreams: { doc: 'Named pools of servers that listeners forward to.' },
  'upstreams.*': { doc: 'One upstream (a cluster in Envoy terms).' },
  'upstreams.*.balance': {
    default: 'round_robin',
    doc: '`round_robin` (smooth weighted, as nginx), `least_conn`, `p2c` (power of two choices on active connections), `random` (weighted), `hash` (consistent, ketama-style), `adaptive` (see docs/BALANCING.md).',
  },
  'upstreams.*.hash_key': {
    default: 'client_ip',
    doc: 'Key for `balance: hash`: `client_ip`, `path` (HTTP), `header:NAME` (HTTP; the first field of that name) or `cookie:NAME` (HTTP; sticky sessions on an application cookie, as HAProxy `balance hdr`/nginx `hash $cookie_NAME`). A request without that header or cookie is hashed by its client IP (before 2026-12-05 a missing header hashed as empty: every such request went to one server). L4 listeners always hash the client IP.',
  },
  'upstreams.*.resolve_interval': {
    default: '30s',
    doc: 'How often server host names are resolved again; added/removed addresses join/leave the pool, keeping the state of the others. `0` resolves once. A lookup slower than 5 s counts as failed; a failed one keeps the last good addresses.',
  },
  'upstreams.*.servers': {
    doc: 'Servers as `host:port` strings or objects. A host name becomes one endpoint per resolved address.',
  },
  'upstreams.*.servers[]': { doc: 'One server.' },
  'upstreams.*.servers[].address': { doc: '`host:port` (required). IPv6 as `[::1]:9001`.' },
  'upstreams.*.servers[].weight': { default: 1, doc: 'Relative weight, 1–1000 (round_robin, random, hash).' },
  'upstreams.*.servers[].max_fails': {
    default: 1,
    doc: 'Passive health (nginx semantics): this many failures within `fail_timeout` mark the server down for `fail_timeout`. `0` disables. A lone server is never marked down.',
  },
  'upstreams.*.servers[].fail_timeout': {
    default: '10s',
    doc: 'Window for counting failures, and how long a failed server stays down.',
  },
  'upstreams.*.servers[].max_connections': {
    default: 0,
    doc: 'Cap on active connections to this server; `0` is unlimited.',
  },
  'upstreams.*.servers[].backup': {
    default: false,
    doc: "A backup server (nginx `backup`, HAProxy `backup`): picked only when no other server can take the attempt (all down, unhealthy, full, or already tried by this request), by the upstream's balancer among the backups. At least one server must not be a backup.",
  },
  'upstreams.*.health_check': { doc: 'Active health checks (optional). Passive health is always on.' },
  'upstreams.*.health_check.type': {
    default: 'tcp',
    doc: '`tcp` (connect succeeds), `http` (GET `path` returns an expected status; HTTP/1.1) or `grpc` (the gRPC health checking protocol, grpc.health.v1 `Health/Check` for `service`, over HTTP/2: passes on `SERVING`).',
  },
  'upstreams.*.health_check.service': {
    default: '',
    doc: "`type: grpc`: the service name asked about (`''`: the server as a whole, as grpc-health-probe and Envoy ask by default).",
  },
  'upstreams.*.health_check.path': { default: '/', doc: 'Path for `type: http`.' },
  'upstreams.*.health_check.host': { doc: 'Host header for `type: http` (default: the server address).' },
  'upstreams.*.health_check.interval': { default: '5s', doc: 'Time between checks of one server.' },
  'upstreams.*.health_check.timeout': {
    doc: 'A check slower than this fails. Must be shorter than `interval`. Unset: 2s, or half of `interval` when that is shorter (`interval: 1s` alone checks with a 500ms timeout).',
  },
  'upstreams.*.health_check.rise': { default: 2, doc: 'Consecutive passes that bring a down server back.' },
  'upstreams.*.health_check.fall': {
    default: 3,
    doc: 'Consecutive failures that take a server out of rotation.',
  },
  'upstreams.*.health_check.expect_status': {
    default: [],
    doc: 'Statuses that pass an `http` check; empty means any 2xx or 3xx.',
  },
  'upstreams.*.keepalive': { doc: 'Upstream HTTP keep-alive pool (used by HTTP listeners).' },
  'upstreams.*.keepalive.max_idle': {
    default: 32,
    doc: 'Idle connections kept per server. Under load the pool keeps more: as many as the server had requests in flight at once in the last 1–2 s, so bursts above `max_idle` reuse their connections; the surplus is closed, oldest first, once that demand is gone. 0 turns keep-alive off.',
  },
  'upstreams.*.keepalive.idle_timeout': {
    default: '60s',
    doc: 'An idle pooled connection is closed after this.',
  },
  'upstreams.*.keepalive.max_requests': {
    default: 1000,
    doc: 'Requests per upstream connection before it is retired.',
  },
  'upstreams.*.http_version': {
    default: '1.1',
    doc: "What http/https listeners speak to the servers: `1.1` (pooled HTTP/1.1 connections), or `2`: HTTP/2, one connection per server carrying every request as a stream, more when the server's SETTINGS_MAX_CONCURRENT_STREAMS is reached (Envoy's HTTP/2 clusters, Caddy `versions 2`/`h2c`, nginx `grpc_pass`), over TLS with ALPN `h2` when `tls` is set and in clear text (h2c, prior knowledge) otherwise. `2` is what gRPC needs: trailers reach HTTP/2 clients, and HTTP/1.1 clients in a chunked body's last chunk. `keepalive.idle_timeout` closes a connection without streams, `keepalive.max_requests` is streams per connection, `max_connections` counts requests in flight. An `http` health check speaks HTTP/1.1, so use `type: grpc` (or `tcp`) with `2`. tcp listeners pass bytes and ignore it.",
  },
  'upstreams.*.send_proxy': {
    default: 'off',
    doc: "tcp listeners: begin each connection to a server with a PROXY protocol header (HAProxy `send-proxy` / `send-proxy-v2`, nginx stream `proxy_protocol on`) naming the client and the address it connected to (a `proxy_protocol` listener passes on the addresses its header gave): `v1` (text) or `v2` (binary); `off` sends none. The server must expect it (nginx `listen … proxy_protocol`, HAProxy `accept-proxy`). With `tls` the header precedes the handshake (HAProxy `send-proxy` with `ssl`). An `http` health check sends a v1 `UNKNOWN` / v2 `LOCAL` header first; a `tcp` check sends nothing. Not for upstreams of http/https listeners (their connections are pooled and carry many clients' requests; `X-Forwarded-For` says who the client is).",
  },
  'upstreams.*.tls': {
    doc: "Speak TLS to the servers: HTTP listeners (nginx `proxy_pass https://`) and tcp listeners (nginx stream `proxy_ssl on`, HAProxy `server … ssl`; their bytes then go through JavaScript, not the native pump). `tls: {}` or `tls: true` for the defaults below. Each server's certificate is verified; TLS sessions are resumed; HTTP offers ALPN `http/1.1`. Not for udp listeners.",
  },
  'upstreams.*.tls.server_name': {
    doc: "SNI sent and the name the server's certificate must carry. Default: the server's host when it is a name; for an IP address no SNI, and the certificate must name that IP.",
  },
  'upstreams.*.tls.verify': {
    default: true,
    doc: '`false` accepts any certificate (a test origin with a self-signed one); logged as a warning at start and reload.',
  },
  'upstreams.*.tls.ca': {
    doc: "PEM file of the CAs to trust instead of Node's bundled Mozilla list (a private CA, a self-signed server certificate).",
  },
  'upstreams.*.tls.crl': {
    doc: "PEM file of certificate revocation lists (nginx `proxy_ssl_crl`): a server whose certificate is revoked fails its handshake (502 `ZL_UPSTREAM_TLS`). OpenSSL then checks the whole chain, so the file needs the current CRL of every CA in it (`UNABLE_TO_GET_CRL` otherwise): with a private CA (`ca`) that is its one CRL; with Node's bundled roots every public chain would need its CAs' CRLs, and a missing one fails the handshake too. Read at start and reload (refresh the file and reload when a new CRL is published); an expired CRL fails handshakes.",
  },
  'upstreams.*.tls.cert': {
    doc: 'PEM client certificate, for servers that require one (mutual TLS); with `key`.',
  },
  'upstreams.*.tls.key': { doc: 'PEM private key of `cert`.' },
  'upstreams.*.tls.min_version': { default: 'TLSv1.2', doc: '`TLSv1.2` or `TLSv1.3`.' },
  'upstreams.*.timeouts': { doc: 'Upstream-side timeouts.' },
  'upstreams.*.timeouts.connect': {
    default: '3s',
    doc: 'TCP connect to a server (and the TLS handshake, with `tls`).',
  },
  'upstreams.*.timeouts.response_header': {
    default: '30s',
    doc: 'HTTP: time from request sent to response head received (`0`: no limit).',
  },
  'upstreams.*.timeouts.idle': {
    default: '60s',
    doc: "HTTP: longest time without progress while a body streams: no byte of the response from the server, or none of the request body taken by it (nginx `proxy_read_timeout` and `proxy_send_timeout`; `0`: no limit). A response the client takes no byte of is bounded by the listener's `client_idle` instead.",
  },
  'upstreams.*.retry': { doc: 'Retries of failed attempts on other servers.' },
  'upstreams.*.retry.attempts': {
    default: 2,
    doc: 'Extra tries after the first. L4: connect failures only (nothing has been sent yet).',
  },
  'upstreams.*.retry.backoff': { doc: 'Exponential backoff with full jitter between tries.' },
  'upstreams.*.retry.backoff.base': {
    default: '25ms',
    doc: 'First backoff ceiling. A try on a server not yet tried for this request goes at once; backoff applies once every server was tried.',
  },
  'upstreams.*.retry.backoff.max': {
    doc: "Backoff ceiling; at least `base`. Unset: 10 × `base` (250ms with the default base; Envoy's rule), so `base: 500ms` alone is valid.",
  },
  'upstreams.*.retry.on': {
    default: ['connect_failure', 'reset', 502, 503, 504],
    doc: 'What is retried: `connect_failure`, `reset`, `timeout`, and HTTP statuses.',
  },
  'upstreams.*.retry.budget': {
    default: '20%',
    doc: 'Retries in flight never exceed this share of active requests (minimum 3).',
  },
  'upstreams.*.circuit_breaker': { doc: 'Caps and failure-ratio breaker for the whole upstream.' },
  'upstreams.*.circuit_breaker.max_connections': {
    default: 1024,
    doc: 'Active upstream connections across all servers.',
  },
  'upstreams.*.circuit_breaker.max_pending': {
    default: 1024,
    doc: 'Requests waiting for a connection (HTTP).',
  },
  'upstreams.*.circuit_breaker.failure_ratio': {
    default: 0.5,
    doc: 'Open when this share of the last `window` failed (HTTP).',
  },
  'upstreams.*.circuit_breaker.min_requests': { default: 20, doc: '…over at least this many requests.' },
  'upstreams.*.circuit_breaker.window': { default: '10s', doc: 'Window for the failure ratio.' },
  'upstreams.*.circuit_breaker.open_for': {
    default: '30s',
    doc: 'Time open before one half-open probe decides.',
  },
  listeners: { doc: 'What zipline accepts. Listeners are identified by `name` across reloads.' },
  'listeners[]': { doc: 'One listener.' },
  'listeners[].name': { doc: 'Unique name (default `PROTOCOL:LISTEN`). Used in metrics, logs and reloads.' },
  'listeners[].protocol': {
    doc: '`tcp`, `udp`, `http`, `https`, `socks5` (RFC 1928 CONNECT, no authentication: keep it on loopback or a trusted network, or name its clients in `clients.allow`; `run` and `check` warn otherwise), `http_proxy` (HTTP CONNECT and absolute-form requests; the same). socks5/http_proxy dial destinations directly and only those on `allow`; the tunnel agent has the same entries through the tunnel (`tunnel.agent.socks5`, `tunnel.agent.http_proxy`).',
  },
  'listeners[].listen': {
    doc: '`host:port` to bind (IPv6 as `[::]:port`); a bare port (`6432`) means all interfaces, as nginx `listen 6432;`. Port 0 picks a free port (shown in `/stats`).',
  },
  'listeners[].upstream': {
    doc: 'tcp/udp: the upstream to forward to (must be defined under `upstreams`). http/https: the upstream of requests no route matches (a catch-all route after `routes`); without it such requests get 404.',
  },
  'listeners[].routes': {
    doc: 'http/https: routes, compiled once into a table. Host first (exact, then the longest `*.suffix`, then routes without a host), then the longest `path_prefix` (a plain prefix, as an nginx prefix `location`). No match: 404 `ZL_HTTP_NO_ROUTE`.',
  },
  'listeners[].routes[]': { doc: 'One route.' },
  'listeners[].routes[].match': { doc: 'What the route matches.' },
  'listeners[].routes[].match.host': {
    doc: 'Host name (case-insensitive, port ignored), or `*.example.com` (any depth of subdomain, not `example.com` itself). Omitted: every host.',
  },
  'listeners[].routes[].match.path_prefix': {
    default: '/',
    doc: 'Path prefix (the query is not part of it).',
  },
  'listeners[].routes[].match.headers': {
    doc: 'Request fields the route also requires, name → value (names case-insensitive, values exact; `"*"`: present with any value), e.g. `{ X-Canary: "1" }` for a canary upstream (Envoy header matchers, HAProxy `hdr()` ACLs). Every one must hold; a repeated field matches if one of its fields does. Among routes with the same host and `path_prefix`, those with `headers` or `methods` are tried first, in config order.',
  },
  'listeners[].routes[].match.methods': {
    doc: 'Request methods the route is for (`[GET, HEAD]`); others go on to the next route (nginx `limit_except`-like routing, Envoy `:method` matchers).',
  },
  'listeners[].routes[].upstream': {
    doc: 'Upstream of the matched requests (must be defined). A route has exactly one of `upstream`, `redirect`, `respond`.',
  },
  'listeners[].routes[].redirect': {
    doc: 'Answer with a redirect instead of proxying (nginx `return 301 https://$host$request_uri`, Caddy `redir`), e.g. `{ to: "https://{host}{uri}" }` on the plain-HTTP listener. The request\'s body is not read (the connection then closes). The route\'s `headers.response.set` are added (an HSTS header); `rate_limit` applies.',
  },
  'listeners[].routes[].redirect.to': {
    doc: "The `Location`: text with placeholders `{host}` (the request's host, without its port), `{uri}` (path and query as received), `{path}`, `{query}` (without the `?`). `strip_prefix` does not apply.",
  },
  'listeners[].routes[].redirect.status': {
    default: 308,
    doc: '`301`, `302`, `303`, `307` or `308`. 308 (and 307) keep the method and body of a POST; 301/302 let clients turn it into a GET.',
  },
  'listeners[].routes[].respond': {
    doc: 'Answer with a fixed response instead of proxying (nginx `return 200 "ok"`, Caddy `respond`): a health endpoint, a maintenance page, robots.txt. The request\'s body is not read. The route\'s `headers.response.set` are added; `rate_limit` applies.',
  },
  'listeners[].routes[].respond.status': {
    default: 200,
    doc: '200–599 (204 and 304 are sent without a body).',
  },
  'listeners[].routes[].respond.body': { default: '', doc: 'The body (UTF-8, at most 64 KiB).' },
  'listeners[].routes[].respond.content_type': {
    default: 'text/plain; charset=utf-8',
    doc: '`Content-Type` of a non-empty body.',
  },
  'listeners[].routes[].strip_prefix': {
    default: false,
    doc: 'Remove `path_prefix` from the path sent upstream (`/api/v1/x` with prefix `/api` → `/v1/x`).',
  },
  'listeners[].routes[].headers': { doc: 'Header rules of the route: `remove` runs first, then `set`.' },
  'listeners[].routes[].headers.request': { doc: 'Rules for the request sent upstream.' },
  'listeners[].routes[].headers.request.set': {
    default: '{}',
    doc: 'Fields to set (replacing every field of that name the client sent).',
  },
  'listeners[].routes[].headers.request.remove': {
    default: [],
    doc: 'Field names to drop (case-insensitive).',
  },
  'listeners[].routes[].headers.response': { doc: 'Rules for the response sent to the client.' },
  'listeners[].routes[].headers.response.set': { default: '{}', doc: 'Fields to set on the response.' },
  'listeners[].routes[].headers.response.remove': {
    default: [],
    doc: 'Field names to drop from the response.',
  },
  'listeners[].routes[].rate_limit': {
    doc: "The route's own rate limit (the same keys as `listeners[].rate_limit`, counted apart from the listener's and other routes'), e.g. a tighter one on `/login`; `off`: none, even if the listener has one. Unset: the listener's.",
  },
  'listeners[].routes[].rate_limit.rate': { doc: 'As `listeners[].rate_limit.rate`.' },
  'listeners[].routes[].rate_limit.burst': { doc: 'As `listeners[].rate_limit.burst`.' },
  'listeners[].routes[].rate_limit.key': { default: 'client_ip', doc: 'As `listeners[].rate_limit.key`.' },
  'listeners[].routes[].rate_limit.max_keys': {
    default: 100000,
    doc: 'As `listeners[].rate_limit.max_keys`.',
  },
  'listeners[].routes[].clients': {
    doc: "Which clients may use this route (nginx `location /admin { allow 10.0.0.0/8; deny all; }`): `deny` wins, a non-empty `allow` refuses everyone else. Checked per request on the request's client (the PROXY header's address, or `real_ip_header`'s from `trusted_proxies`), after routing and before `max_body` and `rate_limit`: a refused request gets **403** `ZL_CLIENT_DENIED` (the connection stays open when it had no body). `listeners[].clients` refuses whole connections instead.",
  },
  'listeners[].routes[].clients.allow': {
    default: [],
    doc: 'Addresses or CIDR blocks served; empty: everyone not on `deny`.',
  },
  'listeners[].routes[].clients.deny': { default: [], doc: 'Addresses or CIDR blocks refused (403).' },
  'listeners[].routes[].max_body': {
    doc: "The largest request body of this route's requests, instead of the listener's `limits.max_body` (an upload route above a small default, as an nginx `location` with its own `client_max_body_size`); `0`: no limit on this route.",
  },
  'listeners[].routes[].timeouts': {
    doc: "This route's upstream timeouts, instead of its upstream's `timeouts` (nginx `proxy_read_timeout` in a `location`): a long-polling, streaming or slow-report route beside quick ones. Each key left out keeps the upstream's; `0` turns that timeout off for the route. A reload applies them to new requests.",
  },
  'listeners[].routes[].timeouts.response_header': {
    doc: "Time from the request sent to the response head received, for this route (else `upstreams.*.timeouts.response_header`); over it: 504 `ZL_UPSTREAM_RESPONSE_TIMEOUT` (retried as the upstream's would be).",
  },
  'listeners[].routes[].timeouts.idle': {
    doc: 'Longest gap between two reads from the server while a response streams, for this route (else `upstreams.*.timeouts.idle`): server-sent events and long downloads. Over it the response is aborted (504 if nothing was sent yet).',
  },
  'listeners[].rate_limit': {
    doc: 'http/https: a request rate limit per client (nginx `limit_req … burst=N nodelay`, Envoy\'s local rate limit): each key may send `burst` requests at once, then `rate` per second; a request over that gets 429 `ZL_HTTP_RATE_LIMITED` with `Retry-After` (whole seconds) and never reaches a server. Applies to every route without its own `rate_limit`, which share one count per key. Counted per process (with `workers: N` a client whose connections land on several workers gets up to N times the rate). A reload that leaves the settings unchanged keeps the counts. See docs/HTTP.md, "Rate limits".',
  },
  'listeners[].rate_limit.rate': {
    doc: 'Requests per second per key: a number (`50`, `0.5`) or `50/s`, `30/m`, `100/h` (required).',
  },
  'listeners[].rate_limit.burst': {
    doc: 'Requests a key may send at once after being quiet (the bucket size). Default: one second of `rate`, at least 1.',
  },
  'listeners[].rate_limit.key': {
    default: 'client_ip',
    doc: "What is counted: `client_ip` (the PROXY protocol header's address when one was read; `X-Forwarded-For` is not used) or `header:NAME` (an API key, a tenant id; the first field of that name; requests without it are counted by client address).",
  },
  'listeners[].rate_limit.max_keys': {
    default: 100000,
    doc: 'Keys tracked at most (about 100 bytes each). When full, keys whose count has run out are forgotten (at most once a second), else the oldest: it starts again with a full `burst`.',
  },
  'listeners[].trusted_proxies': {
    default: [],
    doc: 'http/https: addresses or CIDR blocks whose `X-Forwarded-For`/`-Proto`/`-Host` and `X-Real-IP` are kept (XFF appended to). From anyone else they are replaced with what zipline saw.',
  },
  'listeners[].real_ip_header': {
    doc: "http/https: `X-Forwarded-For` or `X-Real-IP` (nginx `real_ip_header` with `real_ip_recursive on`): for requests from `trusted_proxies` (required with it), the client is the address this header names, not the balancer's: in the access log's `client_ip`, `rate_limit` and `hash_key: client_ip`, and the `X-Real-IP` sent upstream. `X-Forwarded-For` is read right to left, skipping `trusted_proxies`; the first other address is the client (a non-address entry stops the walk). Unset: the connection's address (the PROXY protocol header's, if one was read). `clients` and `max_connections_per_client` always see the connection's. With a `/0` block in `trusted_proxies` on a listener reachable beyond this host, any client can name its own address: `run` warns (at start and on a reload that brings it), `zipline check` says so.",
  },
  'listeners[].client_fin': {
    default: 'abort',
    doc: 'http/https: what a client FIN (half-close) while a request is in flight means. `abort` (nginx): the client gave up, the request ends as 499 and its upstream request is cancelled. `finish` (HAProxy): a request received in full is still answered, and so are requests pipelined before the FIN, then the connection closes; a request cut short is still 499. A client that closed both ways looks the same as a half-closed one until zipline writes to it: under `finish` its request runs to its answer (logged with the upstream status). A client that resets (RST) is 499 in either mode. `abort` is the default because a FIN is how most clients leave (a timeout, Ctrl-C): it frees the upstream at once and logs 499.',
  },
  'listeners[].h2c': {
    default: true,
    doc: "http only: a client that opens with the HTTP/2 connection preface (prior knowledge: `curl --http2-prior-knowledge`, `h2load http://…`) is served HTTP/2 in clear text, as Envoy's automatic codec does; every other client gets HTTP/1.1 as before. `false`: such a client gets 505, as nginx without `http2 on`. Upstreams are spoken to as their `http_version` says; an HTTP/1.1 `Upgrade: h2c` request (`curl --http2` on `http://`) is served as HTTP/1.1, as Envoy does.",
  },
  'listeners[].merge_slashes': {
    default: true,
    doc: 'http/https: runs of `/` in a request\'s path count as one (nginx `merge_slashes`), for routing and in the path sent upstream: `//admin` is `/admin`, so a route\'s `clients` or `rate_limit` cannot be walked around by doubling a slash. Whatever this says, `.`/`..` segments are resolved (a `..` above the root is 400) and percent-encoded unreserved characters (`%61` is `a`) decoded, for routing and upstream alike (docs/HTTP.md, "Paths"). `false`: `//` is kept, for upstreams whose paths carry URLs or empty segments.',
  },
  'listeners[].tls': {
    doc: "https: TLS termination. `cert`/`key` are the default certificate; `certificates` add more, chosen by SNI from each certificate's names (SAN DNS entries, wildcards included).",
  },
  'listeners[].tls.cert': { doc: 'PEM certificate chain file (leaf first).' },
  'listeners[].tls.key': { doc: 'PEM private key file. Read at start and reload; never logged.' },
  'listeners[].tls.certificates': { default: [], doc: 'More `{ cert, key }` pairs for SNI.' },
  'listeners[].tls.certificates[]': { doc: 'One certificate and key.' },
  'listeners[].tls.certificates[].cert': { doc: 'PEM certificate chain file.' },
  'listeners[].tls.certificates[].key': { doc: 'PEM private key file.' },
  'listeners[].tls.min_version': {
    default: 'TLSv1.2',
    doc: '`TLSv1.2` or `TLSv1.3`. TLS 1.3 is always offered.',
  },
  'listeners[].tls.ciphers': {
    default:
      'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305',
    doc: "TLS 1.2 cipher suites, in OpenSSL's names and syntax, `:`-separated. The default is forward-secret AEAD suites only (Mozilla's *intermediate* profile without DHE; also what HTTP/2 over TLS 1.2 requires); Node's own default would also offer static-RSA and CBC suites. Add e.g. `ECDHE-RSA-AES128-SHA` for clients too old for these. TLS 1.3's suites are OpenSSL's defaults and always on.",
  },
  'listeners[].tls.alpn': {
    default: ['h2', 'http/1.1'],
    doc: 'Protocols offered by ALPN, in preference order. `h2` serves HTTP/2 to clients that ask for it (browsers, `curl --http2`); upstreams are spoken to as their `http_version` says, whatever the client spoke.',
  },
  'listeners[].timeouts': { doc: 'Downstream timeouts.' },
  'listeners[].timeouts.client_header': {
    default: '10s',
    doc: 'http/https: a request head (and the TLS handshake) not complete this long after its first byte gets 408 and the connection is closed (nginx `client_header_timeout`); a new connection that sends no request this long, or an HTTP/2 session that opens no stream, is closed without an answer. socks5/http_proxy: the handshake (the SOCKS5 greeting and request, the proxy request head) within this, else closed (http_proxy: 408); a client refused there is answered, then closed once it closes its side, or after this (at most 5 s) if it does not. `0`: no limit.',
  },
  'listeners[].timeouts.client_idle': {
    default: '10m',
    doc: "tcp: a connection with no data in either direction for this long is closed (nginx `proxy_timeout`; a side that leaves bytes unread is reset). http/https (default `60s`): a keep-alive connection idle between requests this long is closed (nginx `keepalive_timeout`), and so is an upgraded (WebSocket) connection with no data either way (reset on a side that leaves bytes unread); a client that takes no byte of its response this long has its connection reset (`ZL_CLIENT_IDLE_TIMEOUT`, nginx `send_timeout`; `0`: the upstream's `idle` bounds it).",
  },
  'listeners[].timeouts.drain_idle': {
    default: '1s',
    doc: 'http/https: once the listener drains (SIGTERM, the old process of an upgrade, a reload that retires it), a keep-alive connection between requests is closed when it has been idle this long (`client_idle` if shorter), and a request it sends first is answered with `Connection: close`: a client that sends its next request as the drain begins gets its response, not a closed connection (HAProxy `option idle-close-on-response`, bounded). `0`: idle connections are closed at once, as nginx and HAProxy do by default. HTTP/2 sessions get a GOAWAY either way.',
  },
  'listeners[].limits': { doc: 'Downstream limits.' },
  'listeners[].limits.max_connections': {
    default: 10000,
    doc: 'Connections beyond this are accepted and closed at once, counted as `ZL_LISTENER_OVER_LIMIT` in `zipline_downstream_rejected_total`, and logged as a warning (the first at once, then at most one per listener every 10 s, with how many were refused since). Connections the native acceptor and libuv take count alike.',
  },
  'listeners[].limits.max_connections_per_client': {
    default: 0,
    doc: "tcp, http, https, socks5, http_proxy: open connections one client address may have to this listener (nginx `limit_conn`, HAProxy `sc_conn_cur`); more are closed at once without a reply, counted as `ZL_CLIENT_CONNECTION_LIMIT` in `zipline_downstream_rejected_total`. The address is the PROXY protocol header's when one was read. An HTTP/2 connection counts once, whatever its streams (`rate_limit` counts requests). `0`: no cap. Connections already open when a reload sets it are not counted.",
  },
  'listeners[].limits.max_header_bytes': {
    default: '16KiB',
    doc: "http/https: a request head larger than this gets 431 and the connection is closed (over HTTP/2, the stream is answered 431). HTTP/2 clients cannot send a head past 64 KiB whatever this says: Node's HTTP/2 layer refuses the stream (REFUSED_STREAM) before zipline sees it, so above 64 KiB `run` and `check` warn on listeners that offer HTTP/2.",
  },
  'listeners[].limits.max_body_replay': {
    default: '64KiB',
    doc: 'http/https: request bodies up to this size are kept until the response starts, so a failed attempt can be retried with the body; a larger body is streamed and its request is not retried once body bytes were sent.',
  },
  'listeners[].limits.max_body': {
    doc: 'http/https: the largest request body accepted (nginx `client_max_body_size`, Caddy `request_body max_size`); unset or `0`: no limit, as HAProxy, Caddy and Envoy (and nginx with `0`). A Content-Length over it gets 413 `ZL_HTTP_BODY_TOO_LARGE` before any body byte is read or a server is asked (with `Expect: 100-continue` the client sends nothing); a chunked body (or HTTP/2 DATA) that grows past it ends its request with 413 if no response started (else the response is aborted) and the connection (HTTP/2: the stream) is closed. A route can set its own (`routes[].max_body`).',
  },
  'listeners[].proxy_protocol': {
    doc: "tcp, http, https, socks5, http_proxy: accept the PROXY protocol (v1 and v2, told apart by their first byte) from the load balancers in front (HAProxy `accept-proxy`, nginx `listen … proxy_protocol` with `set_real_ip_from`, AWS NLB). The header's source address becomes the client's: in the access log, `hash_key: client_ip`, `trusted_proxies`, `X-Forwarded-For`/`X-Real-IP` and `send_proxy`. Only connections from `from` are read for a header; anyone else is served as a direct client, so no other peer can claim an address.",
  },
  'listeners[].proxy_protocol.from': {
    doc: "Addresses or CIDR blocks of the peers that send the header (required). A connection from one of them that does not begin with a valid header is closed without a reply (`ZL_PROXY_PROTOCOL`). A v1 `UNKNOWN` or v2 `LOCAL` header (a balancer checking health) leaves the connection's own addresses.",
  },
  'listeners[].proxy_protocol.timeout': {
    default: '5s',
    doc: 'The whole header must arrive within this after the connection is accepted (`ZL_PROXY_PROTOCOL_TIMEOUT`, closed without a reply).',
  },
  'listeners[].clients': {
    doc: "Which client addresses this listener serves (nginx `allow`/`deny`, HAProxy `tcp-request connection reject`), every protocol: `deny` wins, and a non-empty `allow` refuses everyone it does not name. Checked once per connection (UDP: per new session) on the client's address — the PROXY protocol header's when the listener reads one — before anything else: a refused TCP connection is closed without a reply (no TLS handshake, no HTTP 403, no server picked), a refused datagram is dropped; counted as `ZL_CLIENT_DENIED` in `zipline_downstream_rejected_total` (UDP: `zipline_udp_dropped_total`) and logged at debug, no access line. A reload applies to new connections; open ones are not checked again. IPv4 blocks also match IPv4-mapped IPv6 peers of a dual-stack listener. A connection whose address cannot be read (its client reset it at once: the kernel then no longer names the peer, though the bytes it sent are still there) is refused the same way whenever `clients` is set.",
  },
  'listeners[].clients.allow': {
    default: [],
    doc: 'Addresses or CIDR blocks served; empty: everyone not on `deny`.',
  },
  'listeners[].clients.deny': {
    default: [],
    doc: 'Addresses or CIDR blocks refused, even when `allow` names them too.',
  },
  'listeners[].native': {
    default: 'auto',
    doc: '`auto` runs the data path natively when the native module was built (Linux, at `npm install`): TCP connections move to the splice pump (bytes never enter JavaScript, as HAProxy `option splice-auto`), UDP datagrams are relayed by the native thread. `off` keeps the JavaScript data path. Behaviour is the same either way. A reload applies a change to new TCP connections; a UDP listener keeps its data path until restart (the reload says so). tcp and http/https: `auto` also drains the accept queue on the native thread (libuv accepts one connection per event-loop iteration, so a burst of 1,000 new connections otherwise waits seconds under load), and the connections it accepts keep the client address `accept4` gave, even when the client reset at once (those libuv still accepts beside it, a share, may log none); socks5/http_proxy listeners, which have no `native` key, do the same wherever the native module is built, as do the tunnel agent entries with `tunnel.agent.native: auto`; requests are always served in JavaScript; http/https: `auto` also sends small writes to plain TCP sockets with one native `send(2)` each (docs/HTTP.md).',
  },
  'listeners[].udp': { doc: 'UDP session settings.' },
  'listeners[].udp.responses': {
    default: 0,
    doc: 'Replies expected per datagram the client sent: a session ends once it has had this many for each (nginx `proxy_responses`; `1` for DNS: one query, one answer); `0` is unlimited.',
  },
  'listeners[].udp.idle_timeout': {
    default: '30s',
    doc: 'A session with no datagram either way for this long ends.',
  },
  'listeners[].udp.max_sessions': {
    default: 10000,
    doc: 'Concurrent sessions; datagrams that would open more are dropped (counted).',
  },
  'listeners[].udp.max_queue': {
    default: 64,
    doc: 'Datagrams held per session while its upstream socket is being set up; more are dropped (counted).',
  },
  'listeners[].udp.receive_buffer': {
    default: '4MiB',
    doc: "The listening socket's receive buffer (`SO_RCVBUF`, nginx `listen … udp rcvbuf=`): a burst of datagrams larger than it is dropped by the kernel before zipline sees it. The kernel caps it at `net.core.rmem_max` (often 208 KiB: raise that with `sysctl` for bursts); `0` keeps the kernel default. Applies at start (a reload changing it is reported and applies at restart).",
  },
  'listeners[].allow': {
    doc: 'socks5/http_proxy: destinations this proxy may reach, as the relay `allow` list (`host:port`, `*.suffix:port`, `CIDR:port`, port `*` or a range). Others get SOCKS5 reply 2 / HTTP 403.',
  },
  'listeners[].timeouts.connect': {
    default: '5s',
    doc: 'socks5/http_proxy: time to connect to a destination (then SOCKS5 reply 6 / HTTP 504).',
  },
  ...TUNNEL_REFERENCE,
  ...SHM_REFERENCE,
} as const satisfies Record<string, KeyDoc>;

/** `listeners[].timeouts.client_idle` for http/https listeners (tcp uses the key's default). */
export const HTTP_CLIENT_IDLE_DEFAULT = '60s';

export type ConfigPath = keyof typeof CONFIG_REFERENCE;

/** The default of a key, typed loosely: the schema validates it like user input. */
export function def(path: ConfigPath): never {
  const entry: KeyDoc = CONFIG_REFERENCE[path];
  if (entry.default === undefined) throw new Error(`no default for ${path}`);
  return entry.default as never;
}
