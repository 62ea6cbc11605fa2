import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { formatIssue } from '../../src/config/issue.js';
import { loadConfigText } from '../../src/config/load.js';
import type { UpstreamConfig } from '../../src/config/schema.js';
import { compileUpstream } from '../../src/upstream/settings.js';
import { tempDir } from '../helpers/temp.js';

function issues(yaml: string, env: NodeJS.ProcessEnv = {}): string[] {
  const r = loadConfigText(yaml, env);
  assert.equal(r.ok, false, 'expected the config to be refused');
  return r.ok ? [] : r.issues.map(formatIssue);
}

const GOOD = `
upstreams:
  app:
    servers: [127.0.0.1:9001, { address: 127.0.0.1:9002, weight: 3 }]
listeners:
  - { name: web, protocol: tcp, listen: 127.0.0.1:0, upstream: app }
`;

test('a valid config gets every default and is frozen', () => {
  const r = loadConfigText(GOOD, {});
  assert.ok(r.ok);
  const c = r.config;
  assert.equal(c.admin.listen, '127.0.0.1:9901');
  assert.equal(c.drain_timeout, 30_000);
  const app = c.upstreams.app;
  assert.ok(app);
  assert.equal(app.balance, 'round_robin');
  assert.equal(app.timeouts.connect, 3000);
  assert.equal(app.retry.budget, 0.2);
  assert.deepEqual(
    app.servers.map((s) => [s.address, s.weight, s.max_fails, s.fail_timeout]),
    [
      ['127.0.0.1:9001', 1, 1, 10_000],
      ['127.0.0.1:9002', 3, 1, 10_000],
    ],
  );
  assert.ok(Object.isFrozen(c) && Object.isFrozen(app.servers[0]));
  assert.throws(() => {
    (c as { drain_timeout: number }).drain_timeout = 1;
  });
});

test('the four classic mistakes are all reported, with paths and line:col', () => {
  const yaml = [
    'upstreams:', //                              1
    '  api:', //                                  2
    '    servers: [127.0.0.1:9001]', //           3
    '    timeouts: { conect: 3s }', //            4  misspelt key
    '    health_check: { interval: 5 seconds }', // 5 bad duration
    'listeners:', //                              6
    '  - protocol: tcp', //                       7
    '    listen: ${LISTEN_ADDR}', //              8  missing env var
    '    upstream: apii', //                      9  undefined upstream
  ].join('\n');
  const out = issues(yaml);
  assert.equal(out.length, 4, out.join('\n'));
  assert.match(
    out[0] as string,
    /^upstreams\.api\.timeouts\.conect \(line 4:17\): unknown key "conect"; did you mean "connect"\?/,
  );
  assert.match(
    out[1] as string,
    /^upstreams\.api\.health_check\.interval \(line 5:21\): invalid duration "5 seconds"/,
  );
  assert.match(
    out[2] as string,
    /^listeners\[0\]\.listen \(line 8:5\): environment variable LISTEN_ADDR is not set/,
  );
  assert.match(
    out[3] as string,
    /^listeners\[0\]\.upstream \(line 9:5\): upstream "apii" is not defined \(defined: api\)/,
  );
});

test('an unknown key inside a listener gets a guess from its protocol, and one level down', () => {
  const out = issues(`
upstreams:
  app:
    servers: [127.0.0.1:9001]
    connect: 2s
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    upstrem: app
    client_header: 5s
    routes:
      - { path_prefix: /api, upstream: app }
  - { name: t, protocol: tcp, listen: 127.0.0.1:0, upstream: app, routes: [] }
`);
  assert.deepEqual(out, [
    'upstreams.app.connect (line 5:5): unknown key "connect"; did you mean "timeouts.connect"?',
    'listeners[0].upstrem (line 10:5): unknown key "upstrem"; did you mean "upstream"?',
    'listeners[0].client_header (line 11:5): unknown key "client_header"; did you mean "timeouts.client_header"?',
    'listeners[0].routes[0].path_prefix (line 13:11): unknown key "path_prefix"; did you mean "match.path_prefix"?',
    // routes are http's: a tcp listener has none, and nothing close
    'listeners[1].routes (line 14:67): unknown key "routes"',
  ]);
});

test('upstream tls: true is every default; a client certificate needs its key; a udp listener refuses a tls upstream', () => {
  const ok = loadConfigText('upstreams:\n  app: { servers: [a.test:443], tls: true }\n', {});
  assert.ok(ok.ok);
  assert.deepEqual(ok.config.upstreams.app?.tls, { verify: true, min_version: 'TLSv1.2' });
  const out = issues(`
upstreams:
  app: { servers: [a.test:443], tls: { cert: /x.crt } }
  plain: { servers: [a.test:443], tls: false }
listeners:
  - { name: t, protocol: udp, listen: 127.0.0.1:0, upstream: app }
  - { name: u, protocol: udp, listen: 127.0.0.1:1, upstream: plain }
  - { name: v, protocol: tcp, listen: 127.0.0.1:0, upstream: app }
`);
  assert.deepEqual(out, [
    'upstreams.app.tls (line 3:33): `cert` and `key` go together (a client certificate needs its key)',
    'listeners[0].upstream (line 6:52): upstream "app" has `tls`, which a udp listener cannot speak (no DTLS): use an upstream without it',
  ]);
});

test('a bare number is refused as a duration (its unit cannot be guessed), except 0', () => {
  const out = issues(`
upstreams:
  api: { servers: [127.0.0.1:9001], timeouts: { connect: 3, idle: 0 } }
`);
  assert.deepEqual(out, [
    'upstreams.api.timeouts.connect (line 3:49): a duration needs a unit: write 3s or 3ms, not 3',
  ]);
});

test('a missing variable is one problem, not also the value it would have made', () => {
  // a server written as a string becomes { address }: its schema error would be a follow-on
  const out = issues(`
upstreams:
  api: { servers: ["127.0.0.1:\${API_PORT}", { address: "\${API_HOST}:1" }] }
`);
  assert.deepEqual(
    out.map((l) => l.replace(/ \(line.*/, '')),
    ['upstreams.api.servers[0]', 'upstreams.api.servers[1].address'],
    out.join('\n'),
  );
  assert.ok(out.every((l) => /environment variable API_(PORT|HOST) is not set/.test(l)));
});

test('a bare port listens on all interfaces (nginx `listen 6432;`)', () => {
  const r = loadConfigText(
    'upstreams: { a: { servers: [127.0.0.1:1] } }\nlisteners:\n  - { name: x, protocol: tcp, listen: 6432, upstream: a }\n  - { name: y, protocol: udp, listen: "5353", upstream: a }\n',
    {},
  );
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  assert.deepEqual(
    r.config.listeners.map((l) => l.listen),
    ['0.0.0.0:6432', '0.0.0.0:5353'],
  );
});

test('env interpolation with defaults and escapes', () => {
  const yaml = `
admin: { listen: "\${ADMIN:-127.0.0.1:0}", token: "$\${literal}" }
upstreams: { a: { servers: ["127.0.0.1:\${PORT}"] } }
`;
  const r = loadConfigText(yaml, { PORT: '7000' });
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  assert.equal(r.config.admin.listen, '127.0.0.1:0');
  assert.equal(r.config.admin.token, '${literal}');
  assert.equal(r.config.upstreams.a?.servers[0]?.address, '127.0.0.1:7000');
});

test('${file:PATH} reads a secret file (one trailing newline dropped); unreadable ones are issues that never show contents', () => {
  const dir = tempDir('zl-secret-');
  try {
    writeFileSync(join(dir, 'token'), 'tok-0123456789abcdef\n');
    writeFileSync(join(dir, 'crlf'), 'with-crlf\r\n');
    writeFileSync(join(dir, 'big'), `SECRET-${'x'.repeat(70_000)}`);
    const ok = loadConfigText(`
admin: { listen: 127.0.0.1:0, token: "\${file:${dir}/token}" }
upstreams: { a: { servers: ["127.0.0.1:1"], health_check: { type: http, path: "/\${file:${dir}/crlf}" } } }
`);
    assert.ok(ok.ok, JSON.stringify(!ok.ok && ok.issues));
    assert.equal(ok.config.admin.token, 'tok-0123456789abcdef');
    assert.equal(ok.config.upstreams.a?.health_check?.path, '/with-crlf');
    const out = issues(`
admin: { listen: 127.0.0.1:0, token: "\${file:${dir}/missing}" }
upstreams:
  a: { servers: ["127.0.0.1:1"], health_check: { type: http, path: "/\${file:${dir}/big}", host: "\${file:${dir}}" } }
`);
    assert.equal(out.length, 3, out.join('\n'));
    assert.match(out[0] ?? '', /^admin\.token \(line 2:\d+\): cannot read file .*\/missing: ENOENT$/);
    assert.match(
      out[1] ?? '',
      /^upstreams\.a\.health_check\.path \(line 4:\d+\): .*\/big is 70007 bytes; a \$\{file:\} value is at most 65536$/,
    );
    assert.match(out[2] ?? '', /^upstreams\.a\.health_check\.host \(line 4:\d+\): .* is not a regular file$/);
    assert.ok(!out.join('\n').includes('SECRET-'), 'contents are never printed');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a timeout key of one protocol's listeners written on another's gets the right name", () => {
  const out = issues(`
upstreams:
  a: { servers: [127.0.0.1:1] }
listeners:
  - { name: u, protocol: udp, listen: 127.0.0.1:5353, upstream: a, timeouts: { idle: 5s } }
  - { name: t, protocol: tcp, listen: 127.0.0.1:6000, upstream: a, idle_timeout: 5m }
`);
  assert.deepEqual(out, [
    'listeners[0].timeouts (line 5:68): unknown key "timeouts"; did you mean "udp.idle_timeout"?',
    'listeners[1].idle_timeout (line 6:68): unknown key "idle_timeout"; did you mean "timeouts.client_idle"?',
  ]);
});

test('renamed keys get a hint; unknown sections and protocols are refused', () => {
  const out = issues(`
upstreams:
  a:
    servers: [{ address: 127.0.0.1:1, max_conns: 4 }]
listeners:
  - { protocol: ftp, listen: 127.0.0.1:0, upstream: a }
colour: blue
`);
  assert.ok(
    out.some((l) => /max_conns.*did you mean "max_connections"/.test(l)),
    out.join('\n'),
  );
  assert.ok(
    out.some((l) => /^listeners\[0\]\.protocol \(line 6:/.test(l)),
    out.join('\n'),
  );
  assert.ok(
    out.some((l) => /^colour \(line 7:1\): unknown key/.test(l)),
    out.join('\n'),
  );
});

test('health_check.timeout unset follows a short interval (half of it), else 2s', () => {
  const timeoutOf = (hc: string): number | undefined => {
    const r = loadConfigText(`upstreams:\n  a: { servers: [127.0.0.1:1], health_check: ${hc} }\n`, {});
    assert.ok(r.ok, JSON.stringify(r));
    return compileUpstream('a', r.config.upstreams.a as UpstreamConfig).health?.timeoutMs;
  };
  assert.equal(timeoutOf('{ interval: 1s }'), 500, 'interval 1s alone is a valid config');
  assert.equal(timeoutOf('{ interval: 300ms }'), 150);
  assert.equal(timeoutOf('{ interval: 10s }'), 2000);
  assert.equal(timeoutOf('{}'), 2000);
  assert.equal(timeoutOf('{ interval: 1s, timeout: 800ms }'), 800);
});

test('retry.backoff.max unset is 10 × base', () => {
  const maxOf = (retry: string): number => {
    const r = loadConfigText(`upstreams:\n  a: { servers: [127.0.0.1:1], retry: ${retry} }\n`, {});
    assert.ok(r.ok, JSON.stringify(r));
    return compileUpstream('a', r.config.upstreams.a as UpstreamConfig).backoffMaxMs;
  };
  assert.equal(maxOf('{}'), 250);
  assert.equal(maxOf('{ backoff: { base: 500ms } }'), 5000, 'base above the old fixed max alone is valid');
  assert.equal(maxOf('{ backoff: { base: 10ms, max: 40ms } }'), 40);
});

test('cross-field checks', () => {
  const out = issues(`
upstreams:
  a:
    servers: [127.0.0.1:1, 127.0.0.1:1]
    health_check: { interval: 1s, timeout: 2s }
    retry: { backoff: { base: 1s, max: 100ms } }
listeners:
  - { name: x, protocol: tcp, listen: 127.0.0.1:5000, upstream: a }
  - { name: x, protocol: tcp, listen: 127.0.0.1:5000, upstream: a }
  - { name: y, protocol: udp, listen: 127.0.0.1:5000, upstream: a }
  - { protocol: tcp, listen: 7000, upstream: a }
  - { protocol: tcp, listen: "0.0.0.0:7000", upstream: a }
`);
  const text = out.join('\n');
  assert.match(text, /health_check\.timeout .*shorter than interval/);
  assert.match(text, /backoff\.base .*must not exceed max/);
  assert.match(text, /servers\[1\] .*duplicate server/);
  assert.match(text, /listeners\[1\]\.name .*duplicate listener name/);
  assert.match(text, /listeners\[1\]\.listen .*already used/);
  assert.doesNotMatch(text, /listeners\[2\]\.listen/, 'udp and tcp may share a port');
  assert.match(
    text,
    /listeners\[4\]\.name .*duplicate listener name "tcp:0\.0\.0\.0:7000"/,
    'bare port normalised',
  );
  assert.match(text, /listeners\[4\]\.listen .*already used by listeners\[3\]/);
});

test('the admin server and shm bridges take their addresses too: a listener on one is refused by check', () => {
  const listeners = `listeners:
  - { name: a9, protocol: tcp, listen: 127.0.0.1:9901, upstream: a }
  - { name: s8, protocol: tcp, listen: 127.0.0.1:8090, upstream: a }
  - { name: b7, protocol: tcp, listen: 127.0.0.1:7000, upstream: a }
upstreams:
  a: { servers: [127.0.0.1:1] }
`;
  // the defaults: admin on 127.0.0.1:9901, shm's API on 127.0.0.1:8090 (shared by both bridges)
  let text = issues(
    `${listeners}shm:\n  - { name: s, segment: /zl-a }\n  - { name: t, segment: /zl-b }\n`,
  ).join('\n');
  assert.match(
    text,
    /^admin\.listen .*already used by listeners\[0\] \(127\.0\.0\.1:9901 is the admin server's default/m,
  );
  assert.match(text, /^shm\[0\]\.http .*already used by listeners\[1\]/m);
  assert.doesNotMatch(text, /shm\[1\]\.http/, 'bridges share their server');
  // given: a bare port is on loopback for admin
  text = issues(`${listeners}admin: { listen: 7000 }\n`).join('\n');
  assert.match(text, /^admin\.listen .*already used by listeners\[2\]$/m);
  const fine = loadConfigText(
    `${listeners.replace('9901', '9902').replace('8090', '8091')}shm: [{ name: s, segment: /zl-a }]\n`,
    {},
  );
  assert.equal(fine.ok, true, fine.ok ? '' : fine.issues.map(formatIssue).join('\n'));
});

test('a wildcard address overlaps every address of its family on its port (:: every one); udp and tcp apart', () => {
  const text = issues(`
upstreams:
  a: { servers: [127.0.0.1:1] }
listeners:
  - { name: w, protocol: tcp, listen: "0.0.0.0:7000", upstream: a }
  - { name: l, protocol: tcp, listen: "127.0.0.1:7000", upstream: a }
  - { name: v6, protocol: tcp, listen: "[::1]:7000", upstream: a }
  - { name: u, protocol: udp, listen: "127.0.0.1:7000", upstream: a }
  - { name: w6, protocol: tcp, listen: "[::]:7001", upstream: a }
  - { name: l2, protocol: tcp, listen: "10.0.0.1:7001", upstream: a }
  - { name: ok1, protocol: tcp, listen: "127.0.0.1:7002", upstream: a }
  - { name: ok2, protocol: tcp, listen: "127.0.0.2:7002", upstream: a }
admin: { listen: "0.0.0.0:7002" }
`).join('\n');
  assert.match(text, /^listeners\[1\]\.listen .*overlaps listeners\[0\] \(0\.0\.0\.0:7000\)/m);
  assert.match(text, /^listeners\[5\]\.listen .*overlaps listeners\[4\] \(\[::\]:7001\)/m);
  assert.match(text, /^admin\.listen .*overlaps listeners\[6\] \(127\.0\.0\.1:7002\)/m);
  for (const i of [2, 3, 7]) assert.doesNotMatch(text, new RegExp(`^listeners\\[${i}\\]`, 'm'));
});

test('workers: a count 1–256 or auto (SO_REUSEPORT workers: Linux only)', () => {
  for (const w of ['1', '4', 'auto']) {
    const r = loadConfigText(`workers: ${w}\n`, {});
    if (process.platform === 'linux') assert.equal(r.ok, true, `workers: ${w}`);
    else if (w !== '1')
      assert.match(r.ok ? '' : r.issues.map(formatIssue).join('\n'), /workers .*Linux only/);
  }
  assert.match(issues('workers: 0\n').join('\n'), /^workers /m);
  assert.match(issues('workers: many\n').join('\n'), /^workers /m);
});

test('tunnel and proxy listeners: tokens, allow entries, pins and addresses are checked', () => {
  const text = issues(`
listeners:
  - { name: s5, protocol: socks5, listen: 127.0.0.1:7100 }
  - { name: hp, protocol: http_proxy, listen: 127.0.0.1:7101, allow: ["*:*"] }
tunnel:
  relay:
    listen: 127.0.0.1:7100
    tokens: [short]
    allow: ["10.0.0.0/33:5432", "db.internal:99999", "ok.internal:5432"]
  agent:
    relays:
      - { address: a:7000, fingerprint: "sha256:zz", ca: ca.pem }
      - { address: b:7000, tls: false, fingerprint: "sha256:${'ab'.repeat(32)}" }
    token: "0123456789abcdef"
    via: "ftp://proxy"
    socks5: 127.0.0.1:7101
    reconnect: { base: 1s, max: 100ms }
`).join('\n');
  assert.match(text, /listeners\[0\]\.allow .*Invalid input|listeners\[0\]\.allow/);
  assert.match(text, /listeners\[1\]\.allow\[0\] .*bare "\*"/);
  assert.match(text, /tunnel\.relay\.listen .*already used by listeners\[0\]/);
  assert.match(text, /tunnel\.relay\.tokens\[0\] .*at least 16/);
  assert.match(text, /tunnel\.relay\.allow\[0\] .*bad CIDR/);
  assert.match(text, /tunnel\.relay\.allow\[1\] .*bad port/);
  assert.doesNotMatch(text, /allow\[2\]/);
  assert.match(text, /tunnel\.agent\.relays\[0\]\.fingerprint .*64 hex/);
  assert.match(text, /tunnel\.agent\.relays\[0\] .*not both/);
  assert.match(text, /tunnel\.agent\.relays\[1\] .*need `tls: true`/);
  assert.match(text, /tunnel\.agent\.via .*http:\/\//);
  assert.match(text, /tunnel\.agent\.socks5 .*already used by listeners\[1\]/);
  assert.match(text, /tunnel\.agent\.reconnect\.base .*must not exceed max/);
  const tight = issues(`
tunnel:
  agent: { relays: [a:7000], token: "0123456789abcdef", reconnect: { base: 5ms } }
`).join('\n');
  assert.match(tight, /tunnel\.agent\.reconnect\.base .*at least 10ms/);
  // the relay speaks TLS 1.3 only: its suites are TLS 1.3 names OpenSSL knows (a bad list was
  // ZL_INTERNAL 'no cipher match' at start)
  for (const bad of ['NOPE-CIPHER', 'TLS_FOO', 'ECDHE-RSA-AES128-GCM-SHA256']) {
    const out = issues(`
tunnel:
  relay: { listen: 127.0.0.1:7000, tokens: ["0123456789abcdef"], ciphers: "${bad}" }
`).join('\n');
    assert.match(out, /tunnel\.relay\.ciphers .*expected TLS 1\.3 suites/, bad);
  }
  const good = loadConfigText(
    `
tunnel:
  relay: { listen: 127.0.0.1:7000, tokens: ["0123456789abcdef"], ciphers: "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256" }
`,
    {},
  );
  assert.ok(good.ok);
});

test('http listeners: routes need defined upstreams, https needs a certificate, tls only on https', () => {
  const text = issues(`
upstreams: { app: { servers: [127.0.0.1:1] } }
listeners:
  - { name: a, protocol: http, listen: 127.0.0.1:0 }
  - name: b
    protocol: http
    listen: 127.0.0.1:0
    routes: [{ match: { path_prefix: /x }, upstream: nope }, { match: { path_prefix: /x }, upstream: app }]
    tls: { cert: a.crt, key: a.key }
  - { name: c, protocol: https, listen: 127.0.0.1:0, upstream: app }
  - name: d
    protocol: http
    listen: 127.0.0.1:0
    upstream: app
    trusted_proxies: [10.0.0.0/33]
    limits: { max_header_bytes: lots }
    routes: [{ match: { path_prefix: api }, upstream: app, headers: { request: { set: { "bad name": x } } } }]
`).join('\n');
  assert.match(text, /listeners\[0\] .*needs `routes` or an `upstream`/);
  assert.match(text, /listeners\[1\]\.routes\[0\]\.upstream .*"nope" is not defined/);
  assert.match(text, /listeners\[1\]\.routes\[1\]\.match .*same match as routes\[0\]/);
  assert.match(text, /listeners\[1\]\.tls .*is for `protocol: https`/);
  assert.match(text, /listeners\[2\]\.tls .*needs `tls\.cert`/);
  assert.match(text, /listeners\[3\]\.trusted_proxies\[0\] .*CIDR/);
  assert.match(text, /listeners\[3\]\.limits\.max_header_bytes .*invalid size/);
  assert.match(text, /listeners\[3\]\.routes\[0\]\.match\.path_prefix/);
  assert.match(text, /headers\.request\.set\.bad name .*Invalid key/);
  assert.doesNotMatch(text, /expected object, received undefined/);
});

test('udp.receive_buffer: 4MiB by default, 0 (the kernel default) to 256MiB', () => {
  const udp = (extra: string) =>
    loadConfigText(
      `upstreams: { u: { servers: [127.0.0.1:1] } }\nlisteners: [{ protocol: udp, listen: 127.0.0.1:0, upstream: u${extra} }]\n`,
      {},
    );
  const r = udp('');
  assert.ok(r.ok);
  const l = r.config.listeners[0];
  assert.ok(l?.protocol === 'udp');
  assert.equal(l.udp.receive_buffer, 4 * 1024 * 1024);
  const bad = udp(', udp: { receive_buffer: 1GiB }');
  assert.ok(!bad.ok);
  assert.match(bad.issues.map((i) => i.message).join('\n'), /0 \(the kernel default\) to 256MiB/);
});

test('tunnel.agent.forwards[].receive_buffer: 4MiB for udp forwards by default; refused on a tcp forward', () => {
  const agent = (forwards: string) =>
    loadConfigText(
      `tunnel:\n  agent:\n    relays: [{ address: 127.0.0.1:7000, tls: false }]\n    token: tok-0123456789abcdef\n    forwards: [${forwards}]\n`,
      {},
    );
  const r = agent(
    '{ listen: 127.0.0.1:0, to: 127.0.0.1:53, protocol: udp }, { listen: 127.0.0.1:0, to: 127.0.0.1:80 }',
  );
  assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
  assert.deepEqual(
    r.config.tunnel?.agent?.forwards.map((f) => f.receive_buffer),
    [4 * 1024 * 1024, 0],
  );
  const tcp = agent('{ listen: 127.0.0.1:0, to: 127.0.0.1:80, receive_buffer: 1MiB }');
  assert.ok(!tcp.ok);
  assert.match(
    tcp.issues.map((i) => `${i.path} ${i.message}`).join('\n'),
    /receive_buffer.*is for udp forwards/,
  );
});

test('shm layouts: the same limits as `zipline shm create`', () => {
  const text = issues(`
shm:
  - { name: a, segment: /a, snapshot_capacity: 1GiB, slots: 3, slot_size: 40 }
`).join('\n');
  assert.match(text, /shm\[0\]\.snapshot_capacity .*1 B – 256 MiB/);
  assert.match(text, /shm\[0\]\.slots .*a power of two/);
  assert.match(text, /shm\[0\]\.slot_size .*multiple of 16/);
});

test('header rules cannot set or remove the fields zipline writes itself (framing, connection management)', () => {
  const text = issues(`
upstreams: { app: { servers: [127.0.0.1:1] } }
listeners:
  - name: a
    protocol: http
    listen: 127.0.0.1:0
    routes:
      - upstream: app
        headers:
          request: { set: { Host: example.com, Content-Length: "5" }, remove: [x-a, connection] }
          response: { remove: [Transfer-Encoding, server], set: { HTTP2-Settings: x } }
`).join('\n');
  const managed = /zipline writes this field itself/;
  assert.match(text, new RegExp(`headers\\.request\\.set\\.Content-Length .*${managed.source}`));
  assert.match(text, new RegExp(`headers\\.request\\.remove\\[1\\] .*${managed.source}`));
  assert.match(text, new RegExp(`headers\\.response\\.remove\\[0\\] .*${managed.source}`));
  assert.match(text, new RegExp(`headers\\.response\\.set\\.HTTP2-Settings .*${managed.source}`));
  assert.equal(text.split('\n').length, 4, 'Host, x-a and server are fine');
});

test('YAML syntax errors and duplicate keys are located', () => {
  assert.match(issues('upstreams:\n  a: [\n')[0] as string, /\(line \d+:\d+\)/);
  assert.match(issues('drain_timeout: 1s\ndrain_timeout: 2s\n')[0] as string, /line 2:1/);
});

test('an unquoted ${…} in a flow mapping: the first YAML error says to quote it; the cascade after it is cut short', () => {
  const yaml = [
    'upstreams:',
    '  web: { servers: [127.0.0.1:9000] }',
    'listeners:',
    '  - { name: d, protocol: http, listen: ${ADDR}, upstream: web }',
    ...Array.from(
      { length: 8 },
      (_, i) => `  - { name: l${i}, protocol: tcp, listen: 127.0.0.1:${8000 + i}, upstream: web }`,
    ),
  ].join('\n');
  const out = issues(yaml, { ADDR: '127.0.0.1:8000' });
  // the parser reports an error for nearly every token after it (41 here), on every later line
  assert.match(out[0] as string, /^\(yaml\) \(line 4:\d+\): .*must be quoted: "\$\{NAME\}"/);
  assert.equal(out.length, 6, out.join('\n'));
  assert.match(out[5] as string, /^\(yaml\) \(line 9:\d+\): and errors on 4 more lines from here/);
  // quoted, it is what the docs say: interpolated
  const ok = loadConfigText(yaml.replace('${ADDR}', '"${ADDR}"'), { ADDR: '127.0.0.1:8100' });
  assert.ok(ok.ok, ok.ok ? '' : ok.issues.map(formatIssue).join('\n'));
});

test('regression (found by the fuzzer): an unresolved alias or an alias bomb is an issue, not a crash', () => {
  assert.match(issues('drain_timeout: *nope\n')[0] as string, /^\(yaml\) \(line 1:1\): .*alias/i);
  const bomb = [
    'a: &a ["x","x","x","x","x","x","x","x","x","x"]',
    'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]',
    'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]',
    'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]',
    'e: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]',
  ].join('\n');
  assert.match(issues(bomb)[0] as string, /^\(yaml\) /);
});

test('h2c is an http listener key: on by default there, refused on https', () => {
  const ok = loadConfigText(
    'upstreams: { a: { servers: [127.0.0.1:1] } }\nlisteners: [{ name: w, protocol: http, listen: 127.0.0.1:0, upstream: a, h2c: false }]\n',
    {},
  );
  assert.ok(ok.ok);
  const out = issues(`
upstreams: { a: { servers: [127.0.0.1:1] } }
listeners:
  - { name: s, protocol: https, listen: 127.0.0.1:0, upstream: a, h2c: true, tls: { cert: c, key: k } }
`);
  assert.deepEqual(out, [
    'listeners[0].h2c (line 4:67): `h2c` is for `protocol: http`; https offers h2 by `tls.alpn`',
  ]);
});

test('log.access: `on` (a string in YAML 1.2) is refused, not taken as a file named "on"; ./on is a file', () => {
  for (const v of ['on', 'ON', 'yes', '"true"']) {
    const out = issues(`log: { access: ${v} }\n${GOOD}`);
    assert.equal(out.length, 1, v);
    assert.match(out[0] ?? '', /log\.access .*a destination: stdout, stderr, off, or a file path/, v);
  }
  for (const v of ['./on', 'off', 'stdout', '/var/log/zipline/access.log']) {
    const r = loadConfigText(`log: { access: ${v} }\n${GOOD}`, {});
    assert.ok(r.ok, v);
    assert.equal(r.config.log.access, v);
  }
});
