/**
 * The HTTP proxy when upstreams fail: failover and retries (what is and is not retried), the
 * retry budget under a total outage, the circuit breaker, the keep-alive pool (reuse, the stale
 * connection race, origins closing idle connections), and descriptor leaks.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Agent, request as httpRequest } from 'node:http';
import type { Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { loadConfigText } from '../../src/config/load.js';
import { existingPool, type HttpPool } from '../../src/http/pool.js';
import { metrics } from '../../src/metrics/catalog.js';
import type { Upstream } from '../../src/upstream/upstream.js';
import { get, KeepAliveClient, parseResponse, rawRequest, testPeers } from '../helpers/http.js';
import { openFds, port, refusedPort, splitAddress, until } from '../helpers/net.js';
import { startRuntime } from '../helpers/zipline.js';

const peers = testPeers();
after(() => peers.cleanup());
const origin = peers.origin;
const raw = peers.raw;

function config(servers: string[], upstreamExtra = '', listenerExtra = ''): string {
  return `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 2s
upstreams:
  app:
    servers: [${servers.join(', ')}]
${upstreamExtra}
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    upstream: app
${listenerExtra}
`;
}

/** Sends `n` requests with up to `concurrency` in flight through a keep-alive agent. */
async function load(
  address: string,
  n: number,
  concurrency: number,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<number[]> {
  const [host, p] = splitAddress(address);
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const statuses: number[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      next++;
      statuses.push(
        await new Promise<number>((resolve) => {
          const req = httpRequest(
            { host, port: p, agent, method: opts.method ?? 'GET', path: '/', headers: opts.headers },
            (res) => {
              res.resume();
              res.on('end', () => resolve(res.statusCode ?? 0));
            },
          );
          req.on('error', () => resolve(-1));
          req.end(opts.body);
        }),
      );
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  agent.destroy();
  return statuses;
}

async function counter(
  c: { get(): Promise<{ values: { labels: Record<string, unknown>; value: number }[] }> },
  labels: Record<string, string>,
): Promise<number> {
  const v = (await c.get()).values.filter((x) =>
    Object.entries(labels).every(([k, val]) => x.labels[k] === val),
  );
  return v.reduce((a, x) => a + x.value, 0);
}

describe('failover and retries', () => {
  test('one of two origins down: every idempotent request succeeds', async () => {
    const ok = await origin();
    const down = await refusedPort();
    const z = await startRuntime(
      config(
        [ok.address, `127.0.0.1:${down}`],
        '    retry: { attempts: 2, backoff: { base: 5ms, max: 20ms } }',
      ),
    );
    try {
      const statuses = await load(z.addr('web'), 200, 4);
      assert.deepEqual(new Set(statuses), new Set([200]));
    } finally {
      await z.stop();
    }
  });

  test('backup servers: none of the traffic while a primary can take it; all of it when the primaries are down; not all servers may be backups', async () => {
    const primary = await origin();
    const backup = await origin();
    const down = await refusedPort();
    const servers = (first: string): string[] => [first, `{ address: "${backup.address}", backup: true }`];
    const z = await startRuntime(config(servers(primary.address)));
    try {
      assert.deepEqual(new Set(await load(z.addr('web'), 50, 4)), new Set([200]));
      assert.equal(primary.requests, 50);
      assert.equal(backup.requests, 0, 'no request to the backup while the primary is up');
      const app = z.rt.upstreams.get('app') as Upstream;
      const stats = app.stats() as unknown as { servers: { backup: boolean }[] };
      assert.deepEqual(
        stats.servers.map((s) => s.backup),
        [false, true],
      );
    } finally {
      await z.stop();
    }
    // the primary refuses: the first request's retry goes to the backup (a retry, within the retry
    // budget), and with the primary marked down (max_fails) the next ones go there at once
    const z2 = await startRuntime(config(servers(`127.0.0.1:${down}`), '    retry: { attempts: 1 }'));
    try {
      assert.deepEqual(await load(z2.addr('web'), 1, 1), [200]);
      assert.deepEqual(new Set(await load(z2.addr('web'), 50, 4)), new Set([200]));
      assert.equal(backup.requests, 51);
    } finally {
      await z2.stop();
    }
    const allBackup = loadConfigText(
      `upstreams: { app: { servers: [{ address: "127.0.0.1:1", backup: true }] } }\n`,
      {},
    );
    assert.ok(!allBackup.ok);
    assert.match(allBackup.issues.map((i) => i.message).join('\n'), /at least one must not be/);
  });

  test('replayed request bodies are the bytes sent, with many connections reading at once', async () => {
    // client reads share one buffer (client-connection.ts): a body kept for a retry must be a
    // copy, or other connections' reads would overwrite it before the replay
    const resetter = await raw((s) => {
      let got = 0;
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got > 20_000) s.resetAndDestroy();
      });
    });
    const sums = await origin((_req, res, body) => {
      res.end(createHash('sha256').update(body).digest('hex'));
    });
    const z = await startRuntime(
      config(
        [`{ address: "127.0.0.1:${port(resetter)}", max_fails: 0 }`, sums.address],
        // half the 16 requests are retried at once: more than the default budget (20 %, at least 3)
        // allows when their resets coincide, which this test is not about
        '    balance: round_robin\n    retry: { attempts: 1, budget: 100%, backoff: { base: 1ms, max: 5ms } }\n',
      ),
    );
    try {
      const [host, p] = splitAddress(z.addr('web'));
      const bodies = Array.from({ length: 16 }, (_, i) => randomBytes(40_000 + i * 997));
      const answers = await Promise.all(
        bodies.map(
          (body, i) =>
            new Promise<string>((resolve, reject) => {
              const req = httpRequest(
                {
                  host,
                  port: p,
                  method: 'POST',
                  path: '/',
                  agent: false,
                  headers: { 'Idempotency-Key': `k${i}`, 'Content-Length': body.length },
                },
                (res) => {
                  let text = '';
                  res.setEncoding('utf8');
                  res.on('data', (c: string) => {
                    text += c;
                  });
                  res.on('end', () => resolve(`${res.statusCode} ${text}`));
                },
              );
              req.on('error', reject);
              req.end(body);
            }),
        ),
      );
      for (const [i, body] of bodies.entries()) {
        assert.equal(answers[i], `200 ${createHash('sha256').update(body).digest('hex')}`, `body ${i}`);
      }
      const retried = z.access.filter((l) => l.attempts === 2).length;
      assert.ok(retried >= 4, `bodies replayed after a reset: ${retried}`);
    } finally {
      await z.stop();
    }
  });

  test('an origin that resets after reading: GET and keyed POST are retried elsewhere, a plain POST is not', async () => {
    let resetSeen = 0;
    const resetter = await raw((s) => {
      s.once('data', () => {
        resetSeen++;
        s.resetAndDestroy();
      });
    });
    const ok = await origin();
    const z = await startRuntime(
      config(
        [`127.0.0.1:${port(resetter)}`, ok.address],
        '    balance: round_robin\n    retry: { attempts: 1, backoff: { base: 5ms, max: 20ms } }\n',
      ).replace(`127.0.0.1:${port(resetter)}`, `{ address: "127.0.0.1:${port(resetter)}", max_fails: 0 }`),
    );
    try {
      const addr = z.addr('web');
      const post = 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi';
      const keyed = 'POST / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k1\r\nContent-Length: 2\r\n\r\nhi';
      const results: Record<string, number[]> = { get: [], post: [], keyed: [] };
      for (let i = 0; i < 6; i++) {
        for (const [name, req] of [
          ['get', get('/')],
          ['post', post],
          ['keyed', keyed],
        ] as const) {
          const r = await rawRequest(addr, req, 5000, (d) => parseResponse(d) !== null);
          results[name]?.push(parseResponse(r.data)?.resp.status ?? 0);
        }
      }
      assert.deepEqual(new Set(results.get), new Set([200]));
      assert.deepEqual(new Set(results.keyed), new Set([200]));
      // round robin sends half of the plain POSTs to the resetter: those fail with 502, not retried
      assert.ok(results.post?.includes(502), `plain POSTs: ${results.post}`);
      assert.ok(results.post?.includes(200));
      const failed = z.access.filter((l) => l.method === 'POST' && l.status === 502);
      for (const l of failed) assert.equal(l.attempts, 1);
      assert.ok(resetSeen > 0);
    } finally {
      await z.stop();
    }
  });

  test('503 with Retry-After (seconds) takes that server out for that long; the request goes to the other', async () => {
    const busy = await origin((_req, res) => {
      res.statusCode = 503;
      res.setHeader('Retry-After', '30');
      res.end('busy');
    });
    const ok = await origin();
    const z = await startRuntime(config([busy.address, ok.address], '    balance: round_robin'));
    try {
      const statuses = await load(z.addr('web'), 20, 1);
      assert.deepEqual(new Set(statuses), new Set([200]));
      assert.equal(busy.requests, 1, 'the busy server is asked once, then left alone for 30 s');
    } finally {
      await z.stop();
    }
  });

  test('the retry budget caps retries under a total outage', async () => {
    const fail = await origin((_req, res) => {
      res.statusCode = 503;
      res.end();
    });
    const fail2 = await origin((_req, res) => {
      res.statusCode = 503;
      res.end();
    });
    const measure = async (budget: string): Promise<number> => {
      const z = await startRuntime(
        config(
          [`{ address: "${fail.address}", max_fails: 0 }`, `{ address: "${fail2.address}", max_fails: 0 }`],
          `    retry: { attempts: 3, budget: ${budget}, backoff: { base: 20ms, max: 40ms } }\n    circuit_breaker: { min_requests: 1000000 }`,
        ),
      );
      try {
        const before = await counter(metrics.retries, { upstream: 'app' });
        const statuses = await load(z.addr('web'), 200, 50);
        assert.deepEqual(new Set(statuses), new Set([503]));
        return (await counter(metrics.retries, { upstream: 'app' })) - before;
      } finally {
        await z.stop();
      }
    };
    const unbounded = await measure('100%');
    const budgeted = await measure('20%');
    // without a budget every request makes its 3 retries; with 20 % of 50 in flight, ≤ 10 at a time
    assert.equal(unbounded, 600);
    assert.ok(
      budgeted <= 0.25 * unbounded,
      `retries with a 20% budget: ${budgeted} (unbounded ${unbounded})`,
    );
    assert.ok(budgeted > 0, 'the budget still allows some retries');
    const refused = await counter(metrics.retriesRefused, { upstream: 'app' });
    assert.ok(refused > 0);
  });
});

describe('circuit breaker', () => {
  test('opens under a failing origin, fails fast, half-opens after open_for and closes on a good probe', async () => {
    let failing = true;
    const o = await origin((_req, res) => {
      res.statusCode = failing ? 502 : 200;
      res.end(failing ? 'bad' : 'good');
    });
    const z = await startRuntime(
      config(
        [o.address],
        '    retry: { attempts: 0 }\n    circuit_breaker: { failure_ratio: 0.5, min_requests: 10, window: 10s, open_for: 300ms }',
      ),
    );
    try {
      const first = await load(z.addr('web'), 10, 1);
      assert.deepEqual(new Set(first), new Set([502]));
      const seen = o.requests;
      const open = await load(z.addr('web'), 20, 4);
      assert.deepEqual(new Set(open), new Set([503]));
      assert.equal(o.requests, seen, 'nothing reaches the origin while open');
      assert.equal(z.access.at(-1)?.error, 'ZL_CIRCUIT_OPEN');
      const gauge = await counter(metrics.circuitOpen, { upstream: 'app' });
      assert.equal(gauge, 1);
      failing = false;
      // half-open after open_for: the probe succeeds and closes the breaker
      await until(async () => (await load(z.addr('web'), 1, 1))[0] === 200, 'half-open probe', 5000, 50);
      const after = await load(z.addr('web'), 20, 4);
      assert.deepEqual(new Set(after), new Set([200]));
      assert.equal(await counter(metrics.circuitOpen, { upstream: 'app' }), 0);
    } finally {
      await z.stop();
    }
  });

  test('a half-open probe that finds no server up frees the probe: the next request is another probe, not refused for good', async () => {
    const [a, b] = [await refusedPort(), await refusedPort()];
    const z = await startRuntime(
      config(
        [`127.0.0.1:${a}`, `127.0.0.1:${b}`],
        '    retry: { attempts: 1, backoff: { base: 1ms, max: 2ms } }\n    circuit_breaker: { failure_ratio: 0.5, min_requests: 1, window: 10s, open_for: 100ms }',
      ),
    );
    try {
      // both servers refuse: each is out of rotation for its fail_timeout (10 s), the breaker opens
      assert.equal((await load(z.addr('web'), 1, 1))[0], 502);
      assert.equal(z.access.at(-1)?.attempts, 2);
      const codes = (): unknown[] => z.access.slice(-3).map((l) => l.error);
      // after open_for the breaker lets one probe through; it finds no server (503 unavailable)
      await until(
        async () => (await load(z.addr('web'), 1, 1)) && z.access.at(-1)?.error === 'ZL_UPSTREAM_UNAVAILABLE',
        'a half-open probe',
        5000,
        20,
      );
      // that probe had no verdict: the next request is a probe again (before: refused forever)
      await load(z.addr('web'), 2, 1);
      assert.deepEqual(codes(), [
        'ZL_UPSTREAM_UNAVAILABLE',
        'ZL_UPSTREAM_UNAVAILABLE',
        'ZL_UPSTREAM_UNAVAILABLE',
      ]);
    } finally {
      await z.stop();
    }
  });
});

describe('connection limits', () => {
  test('at max_connections, requests queue up to max_pending (served in turn); beyond it, 503 ZL_UPSTREAM_PENDING_LIMIT', async () => {
    const held: (() => void)[] = [];
    const o = await origin((_req, res) => {
      held.push(() => res.end('done'));
    });
    const z = await startRuntime(
      config([o.address], '    circuit_breaker: { max_connections: 1, max_pending: 1 }'),
    );
    try {
      const addr = z.addr('web');
      const first = rawRequest(addr, get('/1'), 5000, (d) => parseResponse(d) !== null);
      await until(() => held.length === 1, 'first request at the origin');
      const second = rawRequest(addr, get('/2'), 5000, (d) => parseResponse(d) !== null);
      await until(() => z.rt.upstreams.get('app')?.stats().requests_active === 2, 'second request queued');
      const third = await rawRequest(addr, get('/3'), 5000, (d) => parseResponse(d) !== null);
      const refused = parseResponse(third.data)?.resp;
      assert.equal(refused?.status, 503);
      assert.equal(refused?.headers.get('x-zipline-error')?.[0], 'ZL_UPSTREAM_PENDING_LIMIT');
      (held.shift() as () => void)();
      assert.equal(parseResponse((await first).data)?.resp.status, 200);
      await until(() => held.length === 1, 'the queued request reached the origin once capacity was freed');
      (held.shift() as () => void)();
      assert.equal(parseResponse((await second).data)?.resp.status, 200);
    } finally {
      await z.stop();
    }
  });
});

describe('keep-alive pool', () => {
  test('10,000 sequential requests reuse at most max_idle upstream connections', async () => {
    const o = await origin();
    const z = await startRuntime(config([o.address], '    keepalive: { max_idle: 4, max_requests: 100000 }'));
    try {
      const statuses = await load(z.addr('web'), 10_000, 4);
      assert.equal(statuses.filter((s) => s === 200).length, 10_000);
      assert.ok(o.connections <= 4, `origin saw ${o.connections} connections`);
    } finally {
      await z.stop();
    }
  });

  test('bursts above max_idle reuse their connections (the pool follows demand); the surplus is closed once the demand is gone', async () => {
    // each round: 20 requests held at the origin until all 20 are there, then answered together;
    // with only max_idle (2) kept, every round after the first opened 18 new connections
    const BURST = 20;
    const held: (() => void)[] = [];
    const o = await origin((_req, res) => {
      held.push(() => res.end('ok'));
      if (held.length === BURST) for (const answer of held.splice(0)) answer();
    });
    const z = await startRuntime(config([o.address], '    keepalive: { max_idle: 2, idle_timeout: 60s }'));
    try {
      for (let round = 0; round < 10; round++) {
        const statuses = await load(z.addr('web'), BURST, BURST);
        assert.deepEqual(statuses, Array(BURST).fill(200), `round ${round}`);
      }
      assert.ok(
        o.connections <= BURST + 2,
        `origin saw ${o.connections} connections for 10 bursts of ${BURST}`,
      );
      const pool = existingPool(z.rt.upstreams.get('app') as Upstream) as HttpPool;
      assert.ok(pool.idleCount() > 2, "the bursts' connections are kept while the demand is recent");
      await until(() => pool.idleCount() === 2, 'surplus beyond max_idle closed after the demand is gone');
    } finally {
      await z.stop();
    }
  });

  test('max_requests retires a connection after that many requests', async () => {
    const o = await origin();
    const z = await startRuntime(config([o.address], '    keepalive: { max_requests: 10 }'));
    try {
      await load(z.addr('web'), 100, 1);
      assert.equal(o.connections, 10);
    } finally {
      await z.stop();
    }
  });

  test('the keep-alive race on a retry: the replay is neither an attempt nor a retry (zipline_retries_total)', async () => {
    // two idle pooled connections; then the request's first attempt gets a 503 on one, its retry
    // takes the other (reused), which dies before any response byte, and the replay answers
    let armed = false;
    let seen = 0;
    const warm: Socket[] = [];
    const ok = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
    const o = await raw((s) => {
      s.on('data', () => {
        if (!armed) {
          // answer the warm-up only once both connections are open, so that there are two
          warm.push(s);
          if (warm.length === 2) for (const w of warm.splice(0)) w.write(ok);
          return;
        }
        seen++;
        if (seen === 1) s.write('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n');
        else if (seen === 2) s.destroy();
        else s.write(ok);
      });
    });
    const z = await startRuntime(
      config([`127.0.0.1:${port(o)}`], '    retry: { attempts: 1, backoff: { base: 1ms, max: 2ms } }'),
    );
    const retries = async (): Promise<number> =>
      (await metrics.retries.get()).values.find((v) => v.labels.upstream === 'app')?.value ?? 0;
    try {
      const addr = z.addr('web');
      const [a, b] = await Promise.all([KeepAliveClient.open(addr), KeepAliveClient.open(addr)]);
      const warmed = await Promise.all([a.send(get('/')), b.send(get('/'))]);
      assert.deepEqual(
        warmed.map((r) => r.status),
        [200, 200],
      );
      const pool = existingPool(z.rt.upstreams.get('app') as Upstream) as HttpPool;
      await until(() => pool.idleCount() === 2, 'two idle upstream connections');
      armed = true;
      const before = await retries();
      const r = await a.send(get('/'));
      assert.equal(r.status, 200);
      assert.equal(seen, 3, '503, then the reused connection dies, then the replay is answered');
      assert.equal((await retries()) - before, 1, 'one retry: the replay is not one');
      a.close();
      b.close();
    } finally {
      await z.stop();
    }
  });

  test('an origin closing idle connections (and one closing after each response) causes no client-visible error', async () => {
    const quick = await origin(undefined, 30); // keepAliveTimeout 30 ms
    let served = 0;
    // answers one request per connection and closes without saying so: every reuse is stale
    const closer = await raw((s) => {
      s.once('data', () => {
        served++;
        s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      });
    });
    for (const address of [quick.address, `127.0.0.1:${port(closer)}`]) {
      const z = await startRuntime(config([address], '    retry: { attempts: 0 }'));
      try {
        const c = await KeepAliveClient.open(z.addr('web'));
        for (let i = 0; i < 40; i++) {
          const r = await c.send(get('/'));
          assert.equal(r.status, 200, `request ${i}`);
          if (i % 4 === 0) await new Promise((r) => setTimeout(r, 35)); // let idle timeouts race us
        }
        c.close();
      } finally {
        await z.stop();
      }
    }
    assert.equal(served, 40);
  });

  test('a 408 on a reused connection (the server timed it out as the request went out) is replayed on a fresh one when replayable', async () => {
    // each connection: its first request is answered, the next gets `408` and the close (Apache,
    // Kestrel and others say so rather than close silently)
    const got: string[] = [];
    const o = await raw((s) => {
      let n = 0;
      s.on('data', (c: Buffer) => {
        got.push(c.toString('latin1').split(' ')[0] as string);
        if (n++ === 0) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        else s.end('HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      });
    });
    const z = await startRuntime(config([`127.0.0.1:${port(o)}`], '    retry: { attempts: 0 }'));
    try {
      const c = await KeepAliveClient.open(z.addr('web'));
      for (let i = 0; i < 20; i++) assert.equal((await c.send(get('/'))).status, 200, `GET ${i}`);
      assert.deepEqual(
        got.filter((m) => m === 'GET').length,
        39,
        'each GET after the first: a 408, then the replay',
      );
      const key = 'POST / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k1\r\nContent-Length: 2\r\n\r\nhi';
      assert.equal((await c.send(key, 'POST')).status, 200, 'a keyed POST is replayed');
      // a plain POST is not: the client gets the server's 408 (and may decide for itself)
      const plain = 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi';
      assert.equal((await c.send(plain, 'POST')).status, 408);
      c.close();
    } finally {
      await z.stop();
    }
  });
});

describe('leaks', () => {
  test('after 10,000 requests, aborted ones included, descriptors return to the baseline', async () => {
    const o = await origin((req, res) => {
      if (req.url === '/slow') setTimeout(() => res.end('late'), 50);
      else res.end('ok');
    });
    const z = await startRuntime(config([o.address]));
    try {
      const base = openFds();
      const addr = z.addr('web');
      await load(addr, 9_000, 8);
      // 1,000 more: half aborted by the client mid-wait, half cut mid-request
      const aborted: Promise<unknown>[] = [];
      for (let i = 0; i < 500; i++) {
        aborted.push(rawRequest(addr, get('/slow'), 5));
        aborted.push(
          rawRequest(addr, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part', 5),
        );
        if (aborted.length >= 40) await Promise.all(aborted.splice(0));
      }
      await Promise.all(aborted);
      await until(() => z.rt.activeCount() === 0, 'connections closed');
      // what stays open by design: the pool's idle connections (both ends live in this process)
      const pool = existingPool(z.rt.upstreams.get('app') as Upstream) as HttpPool;
      await until(
        () => openFds() <= base + 2 * pool.idleCount(),
        `fds back to baseline (${openFds()} vs ${base} + 2 × ${pool.idleCount()} pooled)`,
      );
    } finally {
      await z.stop();
    }
  });
});
