/**
 * Routes zipline answers itself (`redirect`, `respond`) through a real listener: HTTP/1.1 on a
 * kept-alive connection, HEAD, 204, a request body left unread, HTTP/2 (h2c); placeholders; the
 * route's response headers; rate limits; access lines; config refusals. The origin is never asked.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectH2 } from 'node:http2';
import { after, test } from 'node:test';
import { loadConfigText } from '../../src/config/load.js';
import { get, KeepAliveClient, rawRequest, testPeers } from '../helpers/http.js';
import { startRuntime } from '../helpers/zipline.js';

const peers = testPeers();
after(() => peers.cleanup());

test('redirect and respond: answered by zipline on HTTP/1.1 and HTTP/2, the origin never asked', async () => {
  const origin = await peers.origin((_req, res) => res.end('origin'));
  const z = await startRuntime(`
upstreams:
  app: { servers: [${origin.address}] }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes:
      - match: { path_prefix: /healthz }
        respond: { body: "ok\\n" }
      - match: { path_prefix: /empty }
        respond: { status: 204, body: "ignored" }
      - match: { path_prefix: /gone }
        respond: { status: 410, body: "gone — für immer\\n", content_type: text/html }
        headers: { response: { set: { Cache-Control: no-store } } }
        rate_limit: { rate: 1/h, burst: 1 }
      - match: { path_prefix: /app }
        upstream: app
      - match: { path_prefix: /old }
        redirect: { to: "https://new.example{path}?moved=1&{query}", status: 301 }
      - match: { path_prefix: / }
        redirect: { to: "https://{host}:8443{uri}" }
        headers: { response: { set: { Strict-Transport-Security: max-age=63072000 } } }
`);
  try {
    const c = await KeepAliveClient.open(z.addr('web'));
    const ok = await c.send(get('/healthz'));
    assert.equal(ok.status, 200);
    assert.equal(ok.body.toString(), 'ok\n');
    assert.deepEqual(ok.headers.get('content-type'), ['text/plain; charset=utf-8']);
    assert.deepEqual(ok.headers.get('content-length'), ['3']);
    const head = await c.send('HEAD /healthz HTTP/1.1\r\nHost: x.test\r\n\r\n', 'HEAD');
    assert.equal(head.status, 200);
    assert.deepEqual(head.headers.get('content-length'), ['3']);
    assert.equal(head.body.length, 0);
    const empty = await c.send(get('/empty'));
    assert.equal(empty.status, 204);
    assert.equal(empty.headers.get('content-length'), undefined);
    assert.equal(empty.body.length, 0);

    const gone = await c.send(get('/gone'));
    assert.equal(gone.status, 410);
    assert.equal(gone.body.toString('utf8'), 'gone — für immer\n');
    assert.deepEqual(gone.headers.get('content-length'), [String(Buffer.byteLength('gone — für immer\n'))]);
    assert.deepEqual(gone.headers.get('content-type'), ['text/html']);
    assert.deepEqual(gone.headers.get('cache-control'), ['no-store']);
    assert.equal((await c.send(get('/gone'))).status, 429, "the route's rate_limit applies");

    const r = await c.send(get('/some/where?a=1', 'shop.example:8080'));
    assert.equal(r.status, 308);
    assert.deepEqual(r.headers.get('location'), ['https://shop.example:8443/some/where?a=1']);
    assert.deepEqual(r.headers.get('strict-transport-security'), ['max-age=63072000']);
    assert.deepEqual(r.headers.get('content-length'), ['0']);
    const v6 = await c.send(get('/x', '[::1]:8080'));
    assert.deepEqual(v6.headers.get('location'), ['https://[::1]:8443/x']);
    const old = await c.send(get('/old/page?id=7'));
    assert.equal(old.status, 301);
    assert.deepEqual(old.headers.get('location'), ['https://new.example/old/page?moved=1&id=7']);
    assert.equal((await c.send(get('/app/1'))).body.toString(), 'origin', 'still the same connection');
    c.close();

    // a request with a body: answered, the body left unread, the connection closed
    const post = await rawRequest(
      z.addr('web'),
      'POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n',
    );
    assert.match(post.data.toString(), /^HTTP\/1\.1 200 OK\r\n[\s\S]*Connection: close\r\n\r\nok\n$/);
    assert.equal(post.closed, true);

    // HTTP/2 (h2c)
    const session = connectH2(`http://${z.addr('web')}`);
    const fetchH2 = async (path: string) => {
      const s = session.request({ ':path': path, ':authority': 'h2.example' });
      const [h] = (await once(s, 'response')) as [Record<string, string | number>];
      const body: Buffer[] = [];
      s.on('data', (d: Buffer) => body.push(d));
      await once(s, 'end');
      return { h, body: Buffer.concat(body).toString() };
    };
    const h2ok = await fetchH2('/healthz');
    assert.equal(h2ok.h[':status'], 200);
    assert.equal(h2ok.body, 'ok\n');
    const h2r = await fetchH2('/p?q');
    assert.equal(h2r.h[':status'], 308);
    assert.equal(h2r.h.location, 'https://h2.example:8443/p?q');
    session.close();

    assert.equal(origin.requests, 1, 'only /app reached the origin');
    const line = z.access.find((l) => l.path === '/healthz' && l.method === 'GET');
    assert.equal(line?.status, 200);
    assert.equal(line?.route, '*/healthz');
    assert.equal(line?.upstream, null);
    assert.equal(line?.error, null);
    assert.equal(line?.bytes_out, 3);
    assert.equal(z.access.find((l) => l.status === 308)?.route, '*/');
  } finally {
    await z.stop();
  }
});

test('config: a route has exactly one of upstream, redirect, respond; redirect placeholders are checked', () => {
  const issues = (route: string): string => {
    const r = loadConfigText(
      `upstreams: { app: { servers: [127.0.0.1:1] } }\nlisteners: [{ protocol: http, listen: 127.0.0.1:0, routes: [${route}] }]\n`,
      {},
    );
    return r.ok ? '' : r.issues.map((i) => `${i.path}: ${i.message}`).join('\n');
  };
  assert.equal(issues('{ respond: { body: hi } }'), '');
  assert.match(
    issues('{ upstream: app, redirect: { to: "https://x{uri}" } }'),
    /one of `upstream`, `redirect`, `respond`, not `upstream` and `redirect`/,
  );
  assert.match(
    issues('{ match: { path_prefix: /a } }'),
    /a route needs an `upstream`, a `redirect` or a `respond`/,
  );
  assert.match(
    issues('{ redirect: { to: "https://{hostname}/" } }'),
    /unknown placeholder "\{hostname\}": use \{host\}, \{uri\}, \{path\}, \{query\}/,
  );
  assert.match(issues('{ redirect: { to: "https://x/", status: 200 } }'), /redirect\.status/);
  assert.match(issues('{ respond: { status: 99 } }'), /respond\.status/);
});
