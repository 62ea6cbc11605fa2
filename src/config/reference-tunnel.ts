/** The `tunnel` section of the config reference (`reference.ts`, which it is part of). */
import type { KeyDoc } from './reference.js';

export const TUNNEL_REFERENCE = {
  tunnel: {
    doc: 'The tunnel (docs/TUNNEL.md): a `relay` (server side), an `agent` (client side), or both in one process.',
  },
  'tunnel.relay': { doc: 'Accepts agent sessions and opens their streams to allowed destinations.' },
  'tunnel.relay.listen': {
    doc: '`host:port` agents connect to. A reload binds a new one beside the old, which stops accepting; open sessions go on (docs/TUNNEL.md, "Reload").',
  },
  'tunnel.relay.tls': {
    default: 'auto',
    doc: '`auto`: TLS 1.3 with a self-signed P-256 certificate created once in `state_dir` and reused (its fingerprint is printed at start and shown in `/stats`); `{ cert, key }`: your files; `off`: plain TCP (loopback tests and benchmarks only: the token proof then relies on a timestamp and nonce). A reload applies a change to new sessions.',
  },
  'tunnel.relay.tls.cert': { doc: 'PEM certificate (chain) file of the relay.' },
  'tunnel.relay.tls.key': {
    doc: 'PEM private key file of the relay. Both files are read again at each reload; renewed in place, they are what new sessions get (docs/TUNNEL.md, "Reload").',
  },
  'tunnel.relay.ciphers': {
    default: 'TLS_CHACHA20_POLY1305_SHA256',
    doc: 'TLS 1.3 suites the relay accepts, in order (OpenSSL names, `:`-separated): e.g. `TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256` where AES-NI makes AES faster.',
  },
  'tunnel.relay.state_dir': {
    default: '.zipline',
    doc: 'Where `tls: auto` keeps `relay-cert.pem` and `relay-key.pem` (mode 0600), relative to the working directory.',
  },
  'tunnel.relay.tokens': {
    doc: 'Accepted agent tokens (≥ 16 characters; use `${ENV}` or `${file:PATH}`). Agents prove a token with an HMAC bound to the TLS connection; every token is checked in constant time. Several allow rotation.',
  },
  'tunnel.relay.allow': {
    doc: 'Destinations streams may reach: `127.0.0.1:*`, `10.0.0.0/8:5432`, `[fd00::/8]:443`, `db.internal:5432`, `*.internal:443`, ports as `*` or `8000-8099`. Names match names; addresses and CIDRs match what a name resolves to. Empty forwards nothing (OPEN_ACK 2).',
  },
  'tunnel.relay.connect_timeout': {
    default: '5s',
    doc: 'Time to connect to a destination; then OPEN_ACK 6 (timeout).',
  },
  'tunnel.relay.idle_timeout': {
    default: '10m',
    doc: 'A TCP stream with no byte either way for this long is closed (both ends).',
  },
  'tunnel.relay.udp_idle_timeout': {
    default: '60s',
    doc: 'A UDP association with no datagram either way for this long ends.',
  },
  'tunnel.relay.max_sessions': {
    default: 1000,
    doc: 'Agent connections at once, sessions and connections still in their handshake (10 s at most) together. At the limit a new connection takes the place of the oldest one still in its handshake (closed, counted as `handshake_displaced`), so connections that never authenticate cannot keep agents out; when every place is a session it is closed at once, unanswered (no TLS handshake, no GOAWAY), counted in `zipline_tunnel_rejected_total{reason="max_sessions"}`.',
  },
  'tunnel.relay.limits': { doc: 'Per-session caps; both sides apply their own to what they receive.' },
  'tunnel.relay.limits.max_streams': {
    default: 1024,
    doc: 'Streams the peer may have open at once in one session; more OPENs get RST REFUSED_STREAM (counted).',
  },
  'tunnel.relay.limits.session_window': {
    default: '32MiB',
    doc: 'Connection flow-control window: the most received-but-unread data one session holds (its memory cap). Credit returns as data is consumed.',
  },
  'tunnel.relay.limits.stream_window': { default: '256KiB', doc: 'Initial per-stream window.' },
  'tunnel.relay.limits.max_stream_window': {
    default: '8MiB',
    doc: 'A stream whose reader drains its window within one PING interval has it doubled, up to this.',
  },
  'tunnel.relay.limits.max_payload': {
    default: '16KiB',
    doc: 'Largest DATA/DATAGRAM payload this side accepts (HELLO negotiates the smaller of both; ≤ 64KiB).',
  },
  'tunnel.relay.heartbeat': { doc: 'Liveness: a PING every `interval`; any frame counts as alive.' },
  'tunnel.relay.heartbeat.interval': {
    default: '2s',
    doc: 'PING interval; RTT is measured from the replies.',
  },
  'tunnel.relay.heartbeat.misses': {
    default: 3,
    doc: 'A session with no frame for `interval × misses` is dead (GOAWAY IDLE_TIMEOUT); checked every interval.',
  },
  'tunnel.relay.native': {
    default: 'auto',
    doc: '`auto` runs sessions on the native tunnel engine when it was built (Linux, at `npm install`): TLS, frames, windows and the bytes of streams to their sockets stay in one native thread, never in JavaScript (docs/TUNNEL.md, "Data path"). `off` runs them in JavaScript, as on Windows and macOS. The wire is the same either way. A reload applies a change to new sessions.',
  },
  'tunnel.relay.clients': {
    doc: 'Which agent addresses may connect (as `listeners[].clients`, docs/L4.md): `deny` wins, a non-empty `allow` refuses everyone else; checked on the address the PROXY protocol header names when the relay reads one, before TLS. A refused connection is closed unanswered and counted as `ZL_CLIENT_DENIED` in `zipline_downstream_rejected_total{listener="tunnel.relay"}`; it does not count as a failed authentication. Tokens still decide who may open a session: this keeps everyone else from even trying.',
  },
  'tunnel.relay.clients.allow': {
    default: [],
    doc: 'Addresses or CIDR blocks served; empty: everyone not on `deny`.',
  },
  'tunnel.relay.clients.deny': { default: [], doc: 'Addresses or CIDR blocks refused.' },
  'tunnel.relay.proxy_protocol': {
    doc: 'A relay behind a load balancer (AWS NLB, HAProxy `send-proxy`): connections from `from` begin with a PROXY protocol header (v1 or v2) naming the agent, whose address is then the source for logs and for the per-address rate limit of failed authentications (else every agent would share the balancer\'s). As `listeners[].proxy_protocol` (docs/L4.md): others are served as they come; a bad or late header closes the connection (`ZL_PROXY_PROTOCOL`, `ZL_PROXY_PROTOCOL_TIMEOUT` in `zipline_connection_errors_total{listener="tunnel.relay"}`).',
  },
  'tunnel.relay.proxy_protocol.from': {
    doc: 'Addresses or CIDR blocks of the balancers (required).',
  },
  'tunnel.relay.proxy_protocol.timeout': {
    default: '5s',
    doc: 'The whole header must arrive within this.',
  },
  'tunnel.agent': {
    doc: 'Connects to relays and carries local entries (forwards, SOCKS5, HTTP proxy) through them.',
  },
  'tunnel.agent.id': {
    doc: 'Agent id sent in HELLO (default: the host name). A new session with the same id replaces the old one on the relay (GOAWAY REPLACED). A reload with a new id makes new sessions with every relay; the old ones finish their streams.',
  },
  'tunnel.agent.relays': {
    doc: 'Relays to keep sessions with. New streams go to the best by the adaptive score (docs/TUNNEL.md); a dead relay is skipped at once. A reload applies the list: added relays are connected to, removed ones finish their open streams (docs/TUNNEL.md, "Reload").',
  },
  'tunnel.agent.relays[]': { doc: 'One relay, as `host:port` or an object.' },
  'tunnel.agent.relays[].address': { doc: '`host:port` of the relay.' },
  'tunnel.agent.relays[].fingerprint': {
    doc: "Pin: `sha256:` + SHA-256 of the relay's DER certificate (as `openssl x509 -noout -fingerprint -sha256` prints; colons and case ignored).",
  },
  'tunnel.agent.relays[].ca': {
    doc: 'A CA file to verify the relay against (name checked against `server_name` or the address host). Without `fingerprint` or `ca` the system CAs are used. Read again at each reload: renewed in place, it is what the next connection verifies with.',
  },
  'tunnel.agent.relays[].tls': { default: true, doc: '`false` for a relay with `tls: off`.' },
  'tunnel.agent.relays[].server_name': {
    doc: 'SNI and the name verified with `ca` (default: the address host).',
  },
  'tunnel.agent.token': {
    doc: 'The token (≥ 16 characters; use `${ENV}` or `${file:PATH}`); never sent, only proven (HMAC).',
  },
  'tunnel.agent.via': {
    doc: 'Egress proxy to reach relays: `http://[user:pass@]host:port` (CONNECT, basic auth) or `socks5://host:port`. Unset: `HTTPS_PROXY`/`https_proxy` from the environment; `""`: direct. `NO_PROXY` is honoured either way.',
  },
  'tunnel.agent.compression': {
    default: 'none',
    doc: '`zstd` (level 3, per stream, DATA only, payloads ≥ 256 B, kept when it saves ≥ 10 %, off on streams that do not compress) when both sides have the optional `zstd-napi` module; else `none` with a warning.',
  },
  'tunnel.agent.connect_timeout': {
    default: '10s',
    doc: 'Dial + TLS + HELLO to a relay; also how long a new local connection waits for some relay to be up before it is refused.',
  },
  'tunnel.agent.reconnect': {
    doc: 'Backoff between attempts to reach a relay: full jitter, doubling from `base` to `max`; reset after 60 s up. A GOAWAY retry-after is honoured, and AUTH_FAILED waits at least 10 s.',
  },
  'tunnel.agent.reconnect.base': { default: '500ms', doc: 'First backoff ceiling (≥ 10ms).' },
  'tunnel.agent.reconnect.max': {
    default: '30s',
    doc: "Backoff ceiling; also the longest a relay's GOAWAY retry-after is honoured.",
  },
  'tunnel.agent.idle_timeout': {
    default: '10m',
    doc: 'A forwarded TCP connection with no byte either way for this long is closed.',
  },
  'tunnel.agent.max_connections': {
    default: 10_000,
    doc: 'Connections each local entry (`socks5`, `http_proxy`, each tcp forward) holds at once; more are accepted and closed at once, counted as `ZL_LISTENER_OVER_LIMIT` in `zipline_downstream_rejected_total{listener="tunnel.agent.socks5"}` (…`http_proxy`, …`forwards[N]`), as `listeners[].limits.max_connections`. A reload applies it to new connections.',
  },
  'tunnel.agent.forwards': {
    doc: 'Local ports carried to destinations on the relay side. A reload applies them as listeners (docs/TUNNEL.md, "Reload").',
  },
  'tunnel.agent.forwards[]': { doc: 'One forward.' },
  'tunnel.agent.forwards[].listen': { doc: 'Local `host:port` (a bare port binds all interfaces).' },
  'tunnel.agent.forwards[].to': {
    doc: 'Destination `host:port`, reached by the relay (must be on its `allow`).',
  },
  'tunnel.agent.forwards[].protocol': {
    default: 'tcp',
    doc: '`tcp`, or `udp` (one association per local client address, ended after `udp_idle_timeout` of the relay).',
  },
  'tunnel.agent.forwards[].receive_buffer': {
    default: '4MiB',
    doc: "udp forwards: the local socket's receive buffer (`SO_RCVBUF`), as `listeners[].udp.receive_buffer`: a burst of datagrams larger than it is dropped by the kernel (capped by `net.core.rmem_max` on Linux; counted as `ZL_UDP_RECEIVE_BUFFER_FULL` there). `0` keeps the system default. Not for tcp forwards.",
  },
  'tunnel.agent.socks5': {
    doc: 'Local SOCKS5 entry (RFC 1928: CONNECT and UDP ASSOCIATE, no authentication: bind it to loopback). Reply codes are the OPEN_ACK statuses.',
  },
  'tunnel.agent.http_proxy': {
    doc: 'Local HTTP proxy entry: CONNECT, and absolute-form requests (`GET http://host/…`; one request per connection to the origin).',
  },
  'tunnel.agent.limits': { doc: 'Per-session caps; both sides apply their own to what they receive.' },
  'tunnel.agent.limits.max_streams': {
    default: 1024,
    doc: 'Streams the peer may have open at once in one session; more OPENs get RST REFUSED_STREAM (counted).',
  },
  'tunnel.agent.limits.session_window': {
    default: '32MiB',
    doc: 'Connection flow-control window: the most received-but-unread data one session holds (its memory cap). Credit returns as data is consumed.',
  },
  'tunnel.agent.limits.stream_window': { default: '256KiB', doc: 'Initial per-stream window.' },
  'tunnel.agent.limits.max_stream_window': {
    default: '8MiB',
    doc: 'A stream whose reader drains its window within one PING interval has it doubled, up to this.',
  },
  'tunnel.agent.limits.max_payload': {
    default: '16KiB',
    doc: 'Largest DATA/DATAGRAM payload this side accepts (HELLO negotiates the smaller of both; ≤ 64KiB).',
  },
  'tunnel.agent.heartbeat': { doc: 'Liveness: a PING every `interval`; any frame counts as alive.' },
  'tunnel.agent.heartbeat.interval': {
    default: '2s',
    doc: 'PING interval; RTT is measured from the replies.',
  },
  'tunnel.agent.heartbeat.misses': {
    default: 3,
    doc: 'A session with no frame for `interval × misses` is dead (GOAWAY IDLE_TIMEOUT); checked every interval.',
  },
  'tunnel.agent.native': {
    default: 'auto',
    doc: '`auto` runs sessions on the native tunnel engine when it was built (Linux): TLS, frames, windows and the bytes between local connections and the tunnel stay in one native thread; the entries also accept on the native thread (docs/CONFIG.md, `listeners[].native`). `off` runs them in JavaScript, as on Windows and macOS. A reload applies a change to the next session with each relay (to how an entry accepts: when it is bound again, as entries added or re-addressed by a reload are; others at restart).',
  },
} as const satisfies Record<string, KeyDoc>;
