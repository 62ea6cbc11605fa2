/** Active health checks and DNS re-resolution against real sockets. */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { describe, test } from 'node:test';
import { closeServer, dial, listen, port, readAll, tcpEcho, until } from '../helpers/net.js';
import { startRuntime } from '../helpers/zipline.js';

describe('active health checks', () => {
  test('a killed server leaves rotation within fall × interval and returns after rise passes', async () => {
    const a = await tcpEcho();
    let b: Server = await tcpEcho();
    const bPort = port(b);
    const interval = 100;
    const fall = 3;
    const rise = 2;
    const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
drain_timeout: 2s
upstreams:
  up:
    servers: [127.0.0.1:${port(a)}, 127.0.0.1:${bPort}]
    health_check: { type: tcp, interval: ${interval}ms, timeout: 50ms, fall: ${fall}, rise: ${rise} }
listeners: [{ name: t, protocol: tcp, listen: 127.0.0.1:0, upstream: up }]
`);
    try {
      const up = z.rt.upstreams.get('up');
      const eb = up?.endpoints.find((e) => e.port === bPort);
      assert.ok(up && eb);
      await until(() => eb.checkPasses >= 1, 'a first passing check');
      const killedAt = Date.now();
      await closeServer(b);
      await until(() => !eb.activeHealthy, 'server b to leave rotation', 5000, 5);
      const left = Date.now() - killedAt;
      // fall checks, the first of which can be up to one interval away; slack for a loaded CI box
      assert.ok(left <= (fall + 1) * interval + 300, `left rotation after ${left} ms`);
      assert.equal(eb.checkFails, fall);
      // nothing goes to b now: every connection lands on a
      for (let i = 0; i < 6; i++) {
        const c = await dial(z.addr('t'));
        c.end('x');
        assert.equal((await readAll(c)).toString(), 'x');
      }
      assert.equal(eb.failures, 0, 'no client connection was sent to the unhealthy server');
      b = createServer((s) => s.pipe(s));
      b.listen(bPort, '127.0.0.1');
      await once(b, 'listening');
      const backAt = Date.now();
      await until(() => eb.activeHealthy, 'server b to return', 5000, 5);
      assert.ok(eb.checkPasses >= rise);
      assert.ok(Date.now() - backAt <= (rise + 1) * interval + 300);
    } finally {
      await z.stop();
      await closeServer(a);
      await closeServer(b);
    }
  });

  test('http checks use the path and expected statuses', async () => {
    const { createServer: createHttp } = await import('node:http');
    let status = 200;
    const seen: string[] = [];
    const origin = createHttp((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.host}`);
      res.writeHead(status).end();
    });
    origin.listen(0, '127.0.0.1');
    await once(origin, 'listening');
    const p = (origin.address() as { port: number }).port;
    const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
upstreams:
  up:
    servers: [127.0.0.1:${p}]
    health_check: { type: http, path: /healthz, host: svc.local, interval: 50ms, timeout: 40ms, fall: 2, rise: 1, expect_status: [200, 204] }
`);
    try {
      const e = z.rt.upstreams.get('up')?.endpoints[0];
      assert.ok(e);
      await until(() => seen.length >= 1, 'a check');
      assert.equal(seen[0], 'GET /healthz svc.local');
      status = 503;
      await until(() => !e.activeHealthy, 'a 503 to fail the check');
      assert.match(e.lastCheckError ?? '', /status 503/);
      status = 204;
      await until(() => e.activeHealthy, 'a 204 to pass');
    } finally {
      await z.stop();
      origin.close();
    }
  });
  test('an http check answered with something that is not HTTP fails with a readable reason', async () => {
    const origin = await listen(
      createServer((sock) => {
        sock.on('error', () => {});
        sock.once('data', () => sock.end('\x00\x01 not http at all\r\n\r\n'));
      }),
    );
    const z = await startRuntime(
      `upstreams: { up: { servers: [127.0.0.1:${port(origin)}], health_check: { type: http, interval: 50ms, timeout: 40ms, fall: 1 } } }\n`,
    );
    try {
      const e = z.rt.upstreams.get('up')?.endpoints[0];
      assert.ok(e);
      await until(() => !e.activeHealthy, 'the check to fail');
      assert.match(e.lastCheckError ?? '', /^not a valid HTTP response \(HPE_[A-Z_]+\)$/);
    } finally {
      await z.stop();
      await closeServer(origin);
    }
  });
});

describe('DNS', () => {
  test('host names are re-resolved: new addresses join, gone ones leave, kept ones keep their state', async () => {
    let answer = ['127.0.0.1'];
    let lookups = 0;
    const z = await startRuntime(
      `
admin: { listen: 127.0.0.1:0 }
upstreams:
  up: { servers: [backend.test:7000], resolve_interval: 50ms }
`,
      {
        lookup: (host, cb) => {
          lookups++;
          assert.equal(host, 'backend.test');
          cb(null, answer);
        },
      },
    );
    try {
      const up = z.rt.upstreams.get('up');
      assert.ok(up);
      assert.deepEqual(
        up.endpoints.map((e) => e.address),
        ['127.0.0.1:7000'],
      );
      const first = up.endpoints[0];
      assert.ok(first);
      first.total = 42;
      answer = ['127.0.0.1', '127.0.0.2'];
      await until(() => up.endpoints.length === 2, 'the new address to join');
      assert.equal(up.endpoints[0], first, 'the kept endpoint is the same object');
      assert.equal(up.endpoints[0]?.total, 42);
      answer = ['127.0.0.2'];
      await until(() => up.endpoints.length === 1, 'the gone address to leave');
      assert.equal(up.endpoints[0]?.address, '127.0.0.2:7000');
      const n = lookups;
      await until(() => lookups > n + 1, 'periodic re-resolution');
    } finally {
      await z.stop();
    }
  });

  test('a failing resolution keeps the last good addresses', async () => {
    let fail = false;
    const z = await startRuntime(
      `
admin: { listen: 127.0.0.1:0 }
upstreams:
  up: { servers: [backend.test:7000], resolve_interval: 30ms }
`,
      { lookup: (_h, cb) => (fail ? cb(new Error('ENOTFOUND'), []) : cb(null, ['127.0.0.3'])) },
    );
    try {
      const up = z.rt.upstreams.get('up');
      fail = true;
      const { metrics } = await import('../../src/metrics/catalog.js');
      await until(
        async () => (await metrics.dnsResolutions.get()).values.some((v) => v.labels.result === 'failure'),
        'a failed resolution',
      );
      assert.deepEqual(
        up?.endpoints.map((e) => e.address),
        ['127.0.0.3:7000'],
      );
    } finally {
      await z.stop();
    }
  });
});

describe('DNS timeouts', () => {
  test('a lookup that never answers does not block start-up; it times out and is counted', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const { Upstream, RESOLVE_TIMEOUT_MS } = await import('../../src/upstream/upstream.js');
    const { compileUpstream } = await import('../../src/upstream/settings.js');
    const { loadConfigText } = await import('../../src/config/load.js');
    const { pino } = await import('pino');
    const r = loadConfigText('upstreams: { up: { servers: [hang.test:1], resolve_interval: "0" } }\n', {});
    assert.ok(r.ok);
    const cfg = r.config.upstreams.up;
    assert.ok(cfg);
    const up = new Upstream(compileUpstream('up', cfg), { log: pino({ level: 'silent' }), lookup: () => {} });
    const started = up.start();
    t.mock.timers.tick(RESOLVE_TIMEOUT_MS);
    await started;
    assert.equal(up.endpoints.length, 0);
    assert.equal(up.isReady(), false);
    up.close();
  });
});
