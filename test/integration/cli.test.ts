/** The `zipline` command as a user runs it. */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { HEAP_FLAGS, heapFlagArgv } from '../../src/cli/heap-flags.js';
import { ROOT, runCli, spawnZipline, writeConfig } from '../helpers/zipline.js';

describe('zipline CLI', () => {
  test('check: a config with a misspelt key, a bad duration, an undefined upstream and a missing env var', async () => {
    const file = writeConfig(
      [
        'upstreams:',
        '  api:',
        '    servers: [127.0.0.1:9001]',
        '    balence: round_robin',
        '    timeouts: { connect: 3 sec }',
        'listeners:',
        '  - name: pg',
        '    protocol: tcp',
        '    listen: ${PG_LISTEN}',
        '    upstream: postgres',
        '',
      ].join('\n'),
    );
    const r = await runCli(['check', '-c', file], { PG_LISTEN: undefined });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr.split('\n')[0] ?? '', /: ZL_CONFIG_INVALID: 4 problems$/);
    const lines = r.stderr
      .trim()
      .split('\n')
      .slice(1)
      .map((l) => l.trim());
    assert.deepEqual(lines, [
      'upstreams.api.balence (line 4:5): unknown key "balence"; did you mean "balance"?',
      'upstreams.api.timeouts.connect (line 5:17): invalid duration "3 sec": use a number with a unit (250ms, 3s, 2m, 1h)',
      'listeners[0].listen (line 9:5): environment variable PG_LISTEN is not set (write ${PG_LISTEN:-default} to give a default)',
      'listeners[0].upstream (line 10:5): upstream "postgres" is not defined (defined: api)',
    ]);
  });

  test('check: a good config prints what would run, without secrets, exit 0', async () => {
    const file = writeConfig(`
admin: { token: "\${TOKEN}" }
upstreams:
  api: { servers: [127.0.0.1:9001, 127.0.0.1:9002], balance: least_conn }
  saas: { servers: [10.0.0.5:443], tls: { server_name: api.test, verify: false } }
listeners:
  - { name: pg, protocol: tcp, listen: 127.0.0.1:6432, upstream: api }
  - { name: s5, protocol: socks5, listen: 127.0.0.1:1080, allow: ['*.internal:*'], clients: { allow: [10.0.0.0/8], deny: [10.9.0.0/16] } }
  - { name: open5, protocol: socks5, listen: 1081, allow: ['*.internal:*'] }
  - { name: hp, protocol: http_proxy, listen: 0.0.0.0:3128, allow: ['*.internal:*'], clients: { allow: [10.0.0.0/8] } }
  - name: web
    protocol: http
    listen: 127.0.0.1:8080
    trusted_proxies: [10.0.0.0/8]
    real_ip_header: X-Forwarded-For
    rate_limit: { rate: 30/m, burst: 5 }
    routes:
      - { match: { path_prefix: /api, methods: [GET, HEAD], headers: { X-Canary: "1" } }, upstream: api, clients: { deny: [10.9.0.0/16] }, timeouts: { response_header: 5m, idle: 0 } }
      - { match: { path_prefix: /healthz }, respond: { body: ok }, rate_limit: off }
      - { match: { path_prefix: / }, redirect: { to: "https://{host}{uri}" } }
  - { name: edge, protocol: http, listen: 0.0.0.0:8081, upstream: api, trusted_proxies: [10.0.0.0/8, 0.0.0.0/0], real_ip_header: X-Real-IP }
  - { name: inner, protocol: http, listen: 127.0.0.1:8082, upstream: api, trusted_proxies: [0.0.0.0/0], real_ip_header: X-Real-IP }
  - { name: big, protocol: http, listen: 127.0.0.1:8083, upstream: api, limits: { max_header_bytes: 128KiB } }
  - { name: big1, protocol: http, listen: 127.0.0.1:8084, upstream: api, h2c: false, limits: { max_header_bytes: 128KiB } }
`);
    const r = await runCli(['check', '-c', file], { TOKEN: 'super-secret-token' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /listener pg: tcp 127\.0\.0\.1:6432 -> api$/m);
    assert.match(
      r.stdout,
      /listener s5: socks5 127\.0\.0\.1:1080, clients allow 10\.0\.0\.0\/8 deny 10\.9\.0\.0\/16$/m,
    );
    assert.match(
      r.stdout,
      /listener web: http 127\.0\.0\.1:8080 \(\*\/api \[GET HEAD, X-Canary: 1\] -> api \(clients deny 10\.9\.0\.0\/16, response_header 5m, idle off\), \*\/healthz -> respond 200 \(no rate_limit\), \*\/ -> redirect 308 https:\/\/\{host\}\{uri\}\), client from x-forwarded-for, rate_limit 0\.5\/s burst 5 by client_ip$/m,
    );
    assert.match(
      r.stdout,
      /^listener open5: socks5 0\.0\.0\.0:1081; reachable beyond this host without clients\.allow: anyone who can connect can use it to reach its allow list$/m,
    );
    assert.match(
      r.stdout,
      /^listener big: http 127\.0\.0\.1:8083 -> api; limits\.max_header_bytes is over 64 KiB, the most an HTTP\/2 client can send/m,
    );
    assert.match(
      r.stdout,
      /^listener big1: http 127\.0\.0\.1:8084 -> api$/m,
      'no HTTP/2 offered: nothing to say',
    );
    assert.match(
      r.stdout,
      /^listener edge: http 0\.0\.0\.0:8081 -> api, client from x-real-ip; real_ip_header is believed from every address \(trusted_proxies has a \/0 block\), so every client can name its own address/m,
    );
    assert.match(
      r.stdout,
      /^listener inner: http 127\.0\.0\.1:8082 -> api, client from x-real-ip$/m,
      'loopback only',
    );
    assert.match(r.stdout, /^listener hp: http_proxy 0\.0\.0\.0:3128, clients allow 10\.0\.0\.0\/8$/m);
    assert.match(r.stdout, /upstream api: least_conn, 127\.0\.0\.1:9001 127\.0\.0\.1:9002$/m);
    assert.match(r.stdout, /upstream saas: round_robin, 10\.0\.0\.5:443, tls api\.test NOT VERIFIED$/m);
    assert.match(r.stdout, /token set/);
    assert.match(r.stdout, /drain_timeout: 30s,/);
    assert.doesNotMatch(r.stdout + r.stderr, /super-secret-token/);
  });

  test('check: the TLS files a config names are loaded as run would (nginx -t reads them too): missing or unusable ones are exit 1', async () => {
    const tls = join(ROOT, 'test/fixtures/tls');
    const notAKey = writeConfig('not a key\n');
    const file = writeConfig(`
upstreams:
  o: { servers: [127.0.0.1:9000], tls: { ca: /nonexistent/ca.pem } }
  fine: { servers: [127.0.0.1:9001], tls: { ca: ${tls}/ca.crt, crl: ${tls}/ca.crl } }
listeners:
  - { name: s, protocol: https, listen: 127.0.0.1:8443, upstream: o, tls: { cert: /nonexistent/a.crt, key: /nonexistent/a.key } }
  - { name: k, protocol: https, listen: 127.0.0.1:8444, upstream: o, tls: { cert: ${tls}/a.crt, key: ${notAKey} } }
  - { name: ok, protocol: https, listen: 127.0.0.1:8445, upstream: fine, tls: { cert: ${tls}/a.crt, key: ${tls}/a.key } }
tunnel:
  relay: { listen: 127.0.0.1:7000, tls: { cert: /nonexistent/relay.crt, key: ${tls}/a.key }, tokens: [0123456789abcdef] }
`);
    const r = await runCli(['check', '-c', file]);
    assert.equal(r.code, 1, r.stdout);
    const lines = r.stderr.trim().split('\n');
    // the key that is not a key: OpenSSL's reason, after the pair's certificate path
    assert.match(lines.splice(2, 1)[0] ?? '', /^ {2}listeners\[1\] \(k\)\.tls: \S+a\.crt: \S/);
    assert.deepEqual(lines, [
      `${file}: ZL_TLS_CONFIG: 4 problems with the TLS files it names`,
      '  listeners[0] (s).tls: cannot read TLS certificate /nonexistent/a.crt: ENOENT',
      '  upstreams.o.tls: upstream o: cannot read TLS CA file /nonexistent/ca.pem: ENOENT',
      '  tunnel.relay.tls.cert: cannot read /nonexistent/relay.crt: ENOENT',
    ]);
  });

  test('check: a bare admin port stays on loopback; an admin bound beyond it without a token is pointed out', async () => {
    const bare = await runCli(['check', '-c', writeConfig('admin: { listen: 9901 }\n')]);
    assert.equal(bare.code, 0, bare.stderr);
    assert.match(bare.stdout, /^admin: http:\/\/127\.0\.0\.1:9901\/ \(token not set\)$/m);
    const open = await runCli(['check', '-c', writeConfig('admin: { listen: 0.0.0.0:9901 }\n')]);
    assert.equal(open.code, 0, open.stderr);
    assert.match(
      open.stdout,
      /^admin: http:\/\/0\.0\.0\.0:9901\/ \(token not set; reachable beyond this host: set one\)$/m,
    );
  });

  test('a missing config file is exit 1 with a coded message; run refuses an invalid config with exit 1; the file named without -c', async () => {
    const r = await runCli(['check', '-c', '/nonexistent/zipline.yaml']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ZL_CONFIG_READ: cannot read \/nonexistent\/zipline\.yaml/);
    const bad = writeConfig('listeners: [{ protocol: tcp, listen: 127.0.0.1:0, upstream: nope }]\n');
    const run = await runCli(['run', '-c', bad]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /upstream "nope" is not defined/);
    // run validates in a child process (config/load-isolated.ts): its read errors come back coded
    const missing = await runCli(['run', '-c', '/nonexistent/zipline.yaml']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /ZL_CONFIG_READ: cannot read \/nonexistent\/zipline\.yaml/);
    // the file may also be named without -c; naming two is a usage error
    const positional = await runCli(['run', bad]);
    assert.equal(positional.code, 1);
    assert.match(positional.stderr, /upstream "nope" is not defined/);
    const good = writeConfig('admin: { listen: 9901 }\n');
    assert.equal((await runCli(['check', good])).code, 0);
    const two = await runCli(['check', '-c', bad, good]);
    assert.equal(two.code, 2);
    assert.match(two.stderr, /two config files given/);
  });

  test('an address in use is exit 3', async () => {
    const { createServer } = await import('node:net');
    const s = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => s.once('listening', r));
    const p = (s.address() as { port: number }).port;
    const file = writeConfig(`
admin: { listen: 127.0.0.1:0 }
upstreams: { a: { servers: [127.0.0.1:1] } }
listeners: [{ protocol: tcp, listen: 127.0.0.1:${p}, upstream: a }]
`);
    const r = await runCli(['run', '-c', file]);
    s.close();
    assert.equal(r.code, 3);
    assert.match(r.stderr, /ZL_LISTEN_FAILED/);
    // said as what to do, not as a crash: the reason in the message, no stack trace
    assert.match(r.stderr, /"msg":"could not start: listener \S+: cannot listen on /);
    assert.doesNotMatch(r.stderr, /"stack"/);
    assert.match(
      r.stderr,
      new RegExp(
        `cannot listen on 127\\.0\\.0\\.1:${p}: EADDRINUSE \\(another process is listening there\\)`,
      ),
    );
  });

  test('a tunnel relay whose certificate cannot be kept or read is exit 3 with ZL_TLS_CONFIG, not an internal error', async () => {
    const relay = (tls: string): string =>
      writeConfig(`
admin: { listen: 127.0.0.1:0 }
tunnel:
  relay:
    listen: 127.0.0.1:0
    ${tls}
    tokens: ["0123456789abcdef0123456789abcdef"]
    allow: ["127.0.0.1:*"]
`);
    // a state_dir under a file cannot be created, even by root
    const auto = await runCli(['run', '-c', relay('tls: auto\n    state_dir: /dev/null/zipline')]);
    assert.equal(auto.code, 3);
    assert.match(auto.stderr, /ZL_TLS_CONFIG/);
    assert.match(auto.stderr, /cannot keep its certificate in state_dir \/dev\/null\/zipline/);
    const files = await runCli([
      'run',
      '-c',
      relay('tls: { cert: /nonexistent/relay.crt, key: /nonexistent/relay.key }'),
    ]);
    assert.equal(files.code, 3);
    assert.match(
      files.stderr,
      /ZL_TLS_CONFIG.*cannot read the certificate \/nonexistent\/relay\.crt: ENOENT|cannot read the certificate \/nonexistent\/relay\.crt: ENOENT.*ZL_TLS_CONFIG/,
    );
  });

  test('version, help, and usage errors', async () => {
    const v = await runCli(['version']);
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^zipline \d+\.\d+\.\d+ \(node v20/);
    const h = await runCli(['help']);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /run \[options\]/);
    assert.match(h.stdout, /check \[options\]/);
    const sub = await runCli(['run', '--help']);
    assert.equal(sub.code, 0);
    assert.match(sub.stdout, /--config <file>/);
    const bad = await runCli(['run', '--no-such-flag']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown option/);
    const cmd = await runCli(['frobnicate']);
    assert.equal(cmd.code, 2);
  });

  test('run restarts itself in place (same PID) with its V8 heap flags; ZIPLINE_NO_REEXEC=1 and a given flag opt out', async () => {
    const argv = ['/usr/bin/node', '/x/bin/zipline.js', 'run', '-c', 'z.yaml'];
    assert.deepEqual(heapFlagArgv(argv, ['--cpu-prof'], {}), [
      process.execPath,
      ...HEAP_FLAGS,
      '--cpu-prof',
      '/x/bin/zipline.js',
      'run',
      '-c',
      'z.yaml',
    ]);
    assert.equal(heapFlagArgv(argv, ['--initial-old-space-size=128'], {}), null, 'the user’s own flag wins');
    assert.equal(heapFlagArgv(argv, [], { ZIPLINE_NO_REEXEC: '1' }), null);
    assert.equal(heapFlagArgv(argv, [], { NODE_CHANNEL_FD: '3' }), null, 'an IPC channel would not survive');
    assert.equal(heapFlagArgv(['/usr/bin/node', '/x/bin/zipline.js', 'check'], [], {}), null, 'only run');
    if (process.platform !== 'linux' || !existsSync(`${ROOT}build/Release/zipline_proc.node`)) return;
    const yaml = 'admin: { listen: 127.0.0.1:0 }\nlog: { access: off }\n';
    for (const optOut of [false, true]) {
      const z = await spawnZipline(yaml, optOut ? { ZIPLINE_NO_REEXEC: '1' } : {});
      try {
        await z.stats(); // serving: the restart (if any) happened before
        const cmdline = readFileSync(`/proc/${z.proc.pid}/cmdline`, 'utf8').split('\0');
        assert.equal(cmdline.includes(HEAP_FLAGS[0] as string), !optOut, cmdline.join(' '));
      } finally {
        assert.equal(
          await z.stop('SIGTERM'),
          0,
          'signals reach the restarted process; it drains and exits 0',
        );
      }
    }
  });
});
