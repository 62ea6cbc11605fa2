/**
 * `rate_limit` through a real listener: the burst, then 429 with `Retry-After` (HTTP/1.1 on a
 * kept-alive connection, a refused POST's body left unread, HTTP/2), nothing reaching the origin;
 * a route's own limit and `off`; a header as the key; the access line and the metric; a reload
 * keeps the counts unless the settings change. Rates of 1/h keep time out of it.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectH2 } from 'node:http2';
import { after, test } from 'node:test';
import { loadConfigText } from '../../src/config/load.js';
import { get, KeepAliveClient, rawRequest, testPeers } from '../helpers/http.js';
import { seriesValue } from '../helpers/metrics.js';
import { startRuntime } from '../helpers/zipline.js';

const peers = testPeers();
after(() => peers.cleanup());

const config = (origin: string, listenerBurst: number, idle = '60s') => `
admin: { listen: 127.0.0.1:0 }
log: { level: warn, access: off }
upstreams:
  app: { servers: [${origin}] }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    upstream: app
    rate_limit: { rate: 1/h, burst: ${listenerBurst} }
    timeouts: { client_idle: ${idle} }
    routes:
      - { match: { path_prefix: /free }, upstream: app, rate_limit: off }
      - { match: { path_prefix: /login }, upstream: app, rate_limit: { rate: 1/h, burst: 1, key: "header:X-Api-Key" } }
`;

const limited = (): Promise<number> =>
  seriesValue('zipline_http_errors_total{listener="web",code="ZL_HTTP_RATE_LIMITED"}');

test('rate_limit: burst, then 429 + Retry-After without asking the origin; routes, keys, HTTP/2, reload', async () => {
  const origin = await peers.origin((_req, res) => res.end('ok'));
  const z = await startRuntime(config(origin.address, 2));
  try {
    const c = await KeepAliveClient.open(z.addr('web'));
    assert.equal((await c.send(get('/'))).status, 200);
    assert.equal((await c.send(get('/a'))).status, 200);
    const r = await c.send(get('/b'));
    assert.equal(r.status, 429);
    assert.deepEqual(r.headers.get('retry-after'), ['3600'], 'one interval of 1/h');
    assert.deepEqual(r.headers.get('x-zipline-error'), ['ZL_HTTP_RATE_LIMITED']);
    assert.equal(r.headers.get('connection'), undefined, 'the connection stays open');
    // `off` on a route: not limited, on the same connection
    for (let i = 0; i < 3; i++) assert.equal((await c.send(get('/free'))).status, 200);
    // a route's own limit, counted by the header, apart from the listener's
    const key = (k: string) => get('/login', 'x.test', `X-Api-Key: ${k}\r\n`);
    assert.equal((await c.send(key('alice'))).status, 200);
    assert.equal((await c.send(key('alice'))).status, 429);
    assert.equal((await c.send(key('bob'))).status, 200);
    assert.equal((await c.send(get('/login'))).status, 200, 'no header: by client address');
    assert.equal((await c.send(get('/login'))).status, 429);
    c.close();
    assert.equal(origin.requests, 2 + 3 + 3);

    // a refused request with a body: answered, its body not read, the connection closed
    const post = await rawRequest(
      z.addr('web'),
      'POST / HTTP/1.1\r\nHost: x.test\r\nContent-Length: 5\r\n\r\n',
    );
    assert.match(post.data.toString('latin1'), /^HTTP\/1\.1 429 [^\r]*\r\n[\s\S]*Connection: close\r\n/);
    assert.equal(post.closed, true);

    // HTTP/2 (h2c): the same count per client
    const session = connectH2(`http://${z.addr('web')}`);
    const stream = session.request({ ':path': '/' });
    const [headers] = (await once(stream, 'response')) as [Record<string, string | number>];
    stream.resume();
    await once(stream, 'end');
    session.close();
    assert.equal(headers[':status'], 429);
    assert.equal(headers['retry-after'], '3600');

    assert.equal(await limited(), 5);
    const lines = z.access.filter((l) => l.status === 429);
    assert.equal(lines.length, 5);
    assert.ok(lines.every((l) => l.error === 'ZL_HTTP_RATE_LIMITED' && l.upstream === null));
    assert.equal(origin.requests, 8, 'no refused request reached the origin');

    // a reload changing the listener but not its limit keeps the counts; a changed limit starts afresh
    const same = loadConfigText(config(origin.address, 2, '61s'), {});
    assert.ok(same.ok);
    assert.equal((await z.rt.reload(same.config)).result, 'applied');
    assert.match(
      (await rawRequest(z.addr('web'), get('/', 'x.test', 'Connection: close\r\n'))).data.toString(),
      /^HTTP\/1\.1 429 /,
    );
    const more = loadConfigText(config(origin.address, 3), {});
    assert.ok(more.ok);
    assert.equal((await z.rt.reload(more.config)).result, 'applied');
    assert.match(
      (await rawRequest(z.addr('web'), get('/', 'x.test', 'Connection: close\r\n'))).data.toString(),
      /^HTTP\/1\.1 200 /,
    );
  } finally {
    await z.stop();
  }
});
