/**
 * HTTP listeners across reloads and drains, and random bytes thrown at them: a reload changes
 * routes for the next request (keep-alive connections stay open), a drain lets the request in
 * flight finish with `Connection: close` and answers an idle keep-alive connection's next
 * request with `Connection: close` within `drain_idle` (closed at once with `0`), and
 * garbage never takes the process down.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { loadConfigText } from '../../src/config/load.js';
import type { HttpListener } from '../../src/http/listener.js';
import { existingPool } from '../../src/http/pool.js';
import { get, KeepAliveClient, parseResponse, rawRequest, testPeers } from '../helpers/http.js';
import { seriesValue } from '../helpers/metrics.js';
import { openFds, splitAddress, until } from '../helpers/net.js';
import { rng } from '../helpers/rng.js';
import { ROOT, startRuntime } from '../helpers/zipline.js';

const peers = testPeers();
after(() => peers.cleanup());
const origin = peers.origin;
const TLS = join(ROOT, 'test/fixtures/tls');

function yaml(a: string, b: string, prefixForB: string): string {
  return `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 3s
upstreams:
  a: { servers: [${a}] }
  b: { servers: [${b}] }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    upstream: a
    routes: [{ match: { path_prefix: ${prefixForB} }, upstream: b }]
`;
}

describe('http lifecycle', () => {
  test('a reload changes routing for the next request on an open keep-alive connection', async () => {
    const a = await origin((_req, res) => res.end('a'));
    const b = await origin((_req, res) => res.end('b'));
    const z = await startRuntime(yaml(a.address, b.address, '/b/'));
    try {
      const c = await KeepAliveClient.open(z.addr('web'));
      assert.equal((await c.send(get('/b/x'))).body.toString(), 'b');
      assert.equal((await c.send(get('/c/x'))).body.toString(), 'a');
      const next = loadConfigText(yaml(a.address, b.address, '/c/'), {});
      assert.ok(next.ok);
      const report = await z.rt.reload(next.config);
      assert.deepEqual(report.listeners.changed, ['web']);
      assert.equal((await c.send(get('/b/x'))).body.toString(), 'a');
      assert.equal((await c.send(get('/c/x'))).body.toString(), 'b');
      assert.equal(c.closed, false, 'the client connection survived the reload');
      c.close();
    } finally {
      await z.stop();
    }
  });

  test("Connection: close on plain HTTP: closed once the response is sent, not after the client's FIN", async () => {
    const a = await origin((_req, res) => res.end('a'));
    const z = await startRuntime(yaml(a.address, a.address, '/b/'));
    try {
      const listener = z.rt.listeners.get('web') as HttpListener;
      const [host, p] = splitAddress(z.addr('web'));
      // a client that keeps its side open after the response (allowHalfOpen: no FIN of its own)
      const c = connect({ host, port: p, allowHalfOpen: true });
      let text = '';
      c.on('data', (d: Buffer) => {
        text += d.toString('latin1');
      });
      const ended = new Promise((r) => c.once('end', r));
      c.write(get('/', 'x.test', 'Connection: close\r\n'));
      await ended;
      assert.match(text, /^HTTP\/1\.1 200 [\s\S]*\r\n\r\na$/);
      await until(() => listener.connections.size === 0, 'the connection closed by zipline');
      c.destroy();
    } finally {
      await z.stop();
    }
  });

  test('reloads that overlap (two SIGHUPs, or SIGHUP and POST /reload) apply one after the other', async () => {
    const a = await origin((_req, res) => res.end('a'));
    const b = await origin((_req, res) => res.end('b'));
    const z = await startRuntime(yaml(a.address, b.address, '/b/'));
    try {
      const withExtra = `${yaml(a.address, b.address, '/b/')}  - { name: extra, protocol: http, listen: 127.0.0.1:0, upstream: b }\n`;
      const next = loadConfigText(withExtra, {});
      assert.ok(next.ok);
      const generation = z.rt.generation;
      const reports = await Promise.all([z.rt.reload(next.config), z.rt.reload(next.config)]);
      // the first adds the listener; the second finds it there (interleaved, both bound one, and
      // the first one's socket was left listening, unreachable by any later reload or drain)
      assert.deepEqual(
        reports.map((r) => r.listeners.added),
        [['extra'], []],
      );
      assert.equal(z.rt.generation, generation + 2);
      const r = await rawRequest(z.addr('extra'), get('/'), 5000, (d) => parseResponse(d) !== null);
      assert.equal(parseResponse(r.data)?.resp.body.toString(), 'b');
    } finally {
      await z.stop();
    }
  });

  for (const native of ['auto', 'off']) {
    test(`native: ${native}: every plain connection reads into the shared buffer, whoever accepted it`, async () => {
      const a = await origin((_req, res) => res.end('a'));
      const z = await startRuntime(
        yaml(a.address, a.address, '/b/').replace('upstream: a\n', `upstream: a\n    native: ${native}\n`),
      );
      try {
        // 40 connections at once: with the native acceptor, libuv takes some of them itself
        const clients = await Promise.all(
          Array.from({ length: 40 }, () => KeepAliveClient.open(z.addr('web'))),
        );
        for (const c of clients) assert.equal((await c.send(get('/x'))).body.toString(), 'a');
        const listener = z.rt.listeners.get('web') as unknown as {
          connections: Set<{ socket: { listenerCount(event: string): number } }>;
        };
        assert.equal(listener.connections.size, 40);
        assert.deepEqual(
          // a connection on the stream path listens for 'data'; shared-buffer reads never emit it
          [...listener.connections].filter((c) => c.socket.listenerCount('data') > 0).length,
          0,
          'no connection reads through the socket stream',
        );
        for (const c of clients) c.close();
      } finally {
        await z.stop();
      }
    });
  }

  test('drain: the request in flight completes with Connection: close; an idle keep-alive connection has its next request answered with Connection: close (drain_idle), and one that sends none is closed', async () => {
    let release: () => void = () => {};
    const held = new Promise<void>((r) => {
      release = r;
    });
    const slow = await origin((req, res) => {
      if (req.url === '/slow') void held.then(() => res.end('finally'));
      else res.end('quick');
    });
    const z = await startRuntime(yaml(slow.address, slow.address, '/never/'));
    const l = z.rt.listeners.get('web') as unknown as HttpListener;
    const next = await KeepAliveClient.open(z.addr('web'));
    assert.equal((await next.send(get('/quick'))).status, 200);
    const silent = await KeepAliveClient.open(z.addr('web'));
    assert.equal((await silent.send(get('/quick'))).status, 200);
    const busy = await KeepAliveClient.open(z.addr('web'));
    const inFlight = busy.send(get('/slow'));
    await until(() => slow.requests === 3, 'slow request at the origin');
    const drained = z.stop();
    await until(() => l.draining(), 'the listener draining');
    // the client sends its next request as the drain begins: answered, not a closed connection
    const answered = await next.send(get('/quick'));
    assert.equal(answered.status, 200);
    assert.equal(answered.headers.get('connection')?.[0], 'close');
    await until(() => next.closed, 'the connection closed after that response');
    await until(() => silent.closed, 'the connection that sent nothing closed once idle drain_idle');
    assert.equal(busy.closed, false);
    release();
    const r = await inFlight;
    assert.equal(r.body.toString(), 'finally');
    assert.equal(r.headers.get('connection')?.[0], 'close');
    await drained;
    await until(() => busy.closed, 'busy connection closed after its response');
  });

  test('drain with drain_idle: 0: idle keep-alive connections close at once (nginx)', async () => {
    const o = await origin((_req, res) => res.end('quick'));
    const z = await startRuntime(
      yaml(o.address, o.address, '/never/').replace(
        'upstream: a\n',
        'upstream: a\n    timeouts: { drain_idle: 0s, client_idle: 1h }\n',
      ),
    );
    const l = z.rt.listeners.get('web') as unknown as HttpListener;
    const idle = await KeepAliveClient.open(z.addr('web'));
    assert.equal((await idle.send(get('/quick'))).status, 200);
    const stopping = z.stop();
    await until(() => l.draining(), 'the listener draining');
    // ended (or gone) as the listener stopped, not left to the sweep as drain_idle would be
    const open = [...l.connections].filter((c) => !c.socket.writableEnded);
    assert.equal(open.length, 0);
    await until(() => idle.closed, 'idle keep-alive connection closed by the drain');
    await stopping;
  });

  test('drain_timeout: what it cuts is logged as ZL_DRAIN_TIMEOUT (503 with no response yet, HTTP/1.1 and h2c; the status sent mid-body; an upgraded session 101), not as a client abort', async () => {
    const origin = await peers.raw((sock) => {
      sock.on('error', () => {});
      sock.once('data', (d: Buffer) => {
        const path = d.toString('latin1').split(' ')[1];
        if (path === '/body') sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart');
        else if (path === '/ws')
          sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n');
        // anything else: never answered
      });
    });
    const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
drain_timeout: 300ms
upstreams:
  app: { servers: [127.0.0.1:${(origin.address() as { port: number }).port}] }
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, upstream: app }
`);
    const [host, port] = splitAddress(z.addr('web'));
    const clients = ['/none', '/body', '/ws'].map((path) => {
      const c = connect(port, host);
      c.on('error', () => {});
      const upgrade = path === '/ws' ? 'Connection: Upgrade\r\nUpgrade: test\r\n' : '';
      c.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n${upgrade}\r\n`);
      return c;
    });
    const h2 = await import('node:http2');
    const session = h2.connect(`http://${z.addr('web')}`);
    session.on('error', () => {});
    const stream = session.request({ ':path': '/h2' });
    stream.on('error', () => {});
    try {
      const l = z.rt.listeners.get('web') as unknown as HttpListener;
      await until(async () => {
        const web = ((await z.rt.stats()).listeners as Record<string, { requests_active: number }>).web;
        return web?.requests_active === 4;
      }, 'four requests in flight');
      assert.ok(l.activeCount() >= 4);
      await z.stop();
      const byPath = Object.fromEntries(z.access.map((a) => [a.path, [a.status, a.error]]));
      assert.deepEqual(byPath, {
        '/none': [503, 'ZL_DRAIN_TIMEOUT'],
        '/body': [200, 'ZL_DRAIN_TIMEOUT'],
        '/ws': [101, 'ZL_DRAIN_TIMEOUT'],
        '/h2': [503, 'ZL_DRAIN_TIMEOUT'],
      });
    } finally {
      for (const c of clients) c.destroy();
      session.destroy();
    }
  });

  test('a listener a reload retired with a request in flight: its response closes the connection, requests_active and downstream_connections_active count it beside its successor, and it leaves /stats when done', async () => {
    const waiting: (() => void)[] = [];
    const slow = await origin((_req, res) => {
      waiting.push(() => res.end('done'));
    });
    const at = (host: string) => `
admin: { listen: 127.0.0.1:0 }
upstreams:
  a: { servers: [${slow.address}] }
listeners:
  - { name: web, protocol: http, listen: ${host}:0, upstream: a }
`;
    const z = await startRuntime(at('127.0.0.1'));
    const gauges = async () => {
      const text = await (await fetch(`${z.rt.admin.url()}metrics`)).text();
      const value = (name: string) =>
        Number(new RegExp(`^${name}\\{listener="web"\\} (\\d+)`, 'm').exec(text)?.[1]);
      return {
        requests: value('zipline_requests_active'),
        connections: value('zipline_downstream_connections_active'),
      };
    };
    const retired = async () => (await z.rt.stats()).retired_listeners as { name: string; active: number }[];
    try {
      const old = await KeepAliveClient.open(z.addr('web'));
      const first = old.send(get('/a'));
      first.catch(() => {}); // awaited below; a failed assertion before would leave it unhandled
      await until(() => waiting.length === 1, 'the first request at the origin');
      const next = loadConfigText(at('127.0.0.2'), {});
      assert.ok(next.ok);
      await z.rt.reload(next.config);
      const clients = [await KeepAliveClient.open(z.addr('web')), await KeepAliveClient.open(z.addr('web'))];
      const later = clients.map((c) => c.send(get('/b')));
      for (const l of later) l.catch(() => {});
      await until(() => waiting.length === 3, 'two more requests at the origin, on the new listener');
      // the retired listener's request and connection, and its successor's two
      assert.deepEqual(await gauges(), { requests: 3, connections: 3 });
      assert.deepEqual(await retired(), [{ name: 'web', active: 1 }]);
      for (const answer of waiting.splice(0)) answer();
      const r = await first;
      assert.equal(
        r.headers.get('connection')?.[0],
        'close',
        'the retired listener keeps no connection alive',
      );
      await until(() => old.closed, 'the connection to the retired listener closed');
      for (const l of await Promise.all(later)) assert.notEqual(l.headers.get('connection')?.[0], 'close');
      await until(async () => (await retired()).length === 0, 'the retired listener gone from /stats');
      assert.deepEqual(await gauges(), { requests: 0, connections: 2 });
      for (const c of clients) c.close();
      await until(async () => (await gauges()).connections === 0, 'no connection open');
    } finally {
      for (const answer of waiting.splice(0)) answer(); // a failed assertion left them waiting
      await z.stop();
    }
  });

  test('zipline_downstream_bytes_total: every byte HTTP/1.1 clients sent and received (direct sends, a spliced 1 MiB body, TLS), and HTTP/2 sessions', async () => {
    const big = Buffer.alloc(1 << 20, 0x62);
    const o = await origin((req, res) => res.end(req.url === '/big' ? big : 'ok'));
    const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
upstreams:
  a: { servers: [${o.address}] }
listeners:
  - { name: counted, protocol: http, listen: 127.0.0.1:0, upstream: a }
  - name: counted_tls
    protocol: https
    listen: 127.0.0.1:0
    upstream: a
    tls: { cert: ${join(TLS, 'a.crt')}, key: ${join(TLS, 'a.key')} }
`);
    const bytes = async (listener: string): Promise<[number, number]> => {
      const series = (d: string) =>
        seriesValue(`zipline_downstream_bytes_total{listener="${listener}",direction="${d}"}`);
      return [await series('rx'), await series('tx')];
    };
    /** Three requests on one connection (the last asks to close): what the client sent and received. */
    const exchange = async (open: () => Socket): Promise<[number, number]> => {
      const c = open();
      let received = 0;
      c.on('data', (d: Buffer) => {
        received += d.length;
      });
      const text = get('/small') + get('/big') + get('/small', 'x.test', 'Connection: close\r\n');
      c.write(text);
      await once(c, 'end');
      c.destroy();
      return [Buffer.byteLength(text), received];
    };
    try {
      const [h, p] = splitAddress(z.addr('counted'));
      const plain = await exchange(() => connect(p, h));
      assert.ok(plain[1] > big.length, 'the 1 MiB body came');
      await until(async () => (await bytes('counted')).join() === plain.join(), 'plain HTTP/1.1 counted');
      const [th, tp] = splitAddress(z.addr('counted_tls'));
      const tls = await exchange(() => tlsConnect({ host: th, port: tp, rejectUnauthorized: false }));
      await until(
        async () => (await bytes('counted_tls')).join() === tls.join(),
        'HTTP/1.1 over TLS counted',
      );
      // HTTP/2 (h2c): at least the body each way's frames carry
      const h2 = await import('node:http2');
      const session = h2.connect(`http://${z.addr('counted')}`);
      await new Promise<void>((resolve) => {
        const req = session.request({ ':path': '/big' });
        req.resume();
        req.on('end', () => resolve());
      });
      session.close();
      await until(
        async () => (await bytes('counted'))[1] >= plain[1] + big.length,
        'the HTTP/2 session counted',
      );
      assert.ok((await bytes('counted'))[0] > plain[0] + 24, 'its preface and frames read');
    } finally {
      await z.stop();
    }
  });

  test('random bytes on the listener: coded 4xx or a close, never a crash; fds return', async () => {
    const o = await origin();
    const z = await startRuntime(yaml(o.address, o.address, '/b/'));
    try {
      const base = openFds();
      const rand = rng(7);
      const seeds = [
        'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
        'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
        'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello',
      ];
      let answered = 0;
      for (let i = 0; i < 300; i++) {
        const seed = Buffer.from(seeds[i % seeds.length] as string, 'latin1');
        const bytes = Buffer.from(seed);
        const flips = 1 + Math.floor(rand() * 4);
        for (let f = 0; f < flips; f++) bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
        const payload =
          i % 10 === 0 ? Buffer.from(Array.from({ length: 64 }, () => Math.floor(rand() * 256))) : bytes;
        const r = await rawRequest(z.addr('web'), payload, 300, (d) => parseResponse(d) !== null);
        const p = parseResponse(r.data);
        if (p !== null) {
          answered++;
          assert.ok([200, 400, 404, 431, 505].includes(p.resp.status), `status ${p.resp.status}`);
        }
      }
      assert.ok(answered > 100);
      // the process still serves
      const ok = await rawRequest(z.addr('web'), get('/', 'x', 'Connection: close\r\n'));
      assert.match(ok.data.toString(), /^HTTP\/1\.1 200/);
      await until(() => z.rt.activeCount() === 0, 'connections closed');
      const pooled = 2 * (existingPool(z.rt.upstreams.get('a') as never)?.idleCount() ?? 0);
      await until(
        () => openFds() <= base + pooled,
        `fds back to baseline (${openFds()} vs ${base} + ${pooled})`,
      );
    } finally {
      await z.stop();
    }
  });
});
