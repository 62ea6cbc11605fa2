/**
 * Routes chosen by request fields and methods (`match.headers`, `match.methods`) through a real
 * listener, HTTP/1.1 and HTTP/2: a canary by header, a method split, `"*"` for presence, repeated
 * fields, longest prefix still first; the duplicate check sees the conditions. Paths are
 * normalised before any of it (`..`, `%61`, `//`), and the upstream gets the normalised path.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect as connectH2 } from 'node:http2';
import { after, test } from 'node:test';
import { loadConfigText } from '../../src/config/load.js';
import { KeepAliveClient, startOrigin } from '../helpers/http.js';
import { startRuntime } from '../helpers/zipline.js';

test('match.headers and match.methods pick among routes of one prefix; others fall through', async () => {
  const z = await startRuntime(`
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes:
      - { match: { path_prefix: /api, headers: { X-Canary: "1" } }, respond: { body: canary } }
      - { match: { path_prefix: /api, methods: [POST, PUT] }, respond: { body: write } }
      - { match: { path_prefix: /api }, respond: { body: stable } }
      - { match: { path_prefix: /, headers: { x-debug: "*" } }, respond: { body: debug } }
      - { match: { path_prefix: / }, respond: { body: root } }
`);
  try {
    const c = await KeepAliveClient.open(z.addr('web'));
    const ask = async (method: string, path: string, fields = '') => {
      const body = method === 'POST' || method === 'PUT' ? 'Content-Length: 0\r\n' : '';
      const r = await c.send(`${method} ${path} HTTP/1.1\r\nHost: a.test\r\n${body}${fields}\r\n`, method);
      return r.body.toString();
    };
    assert.equal(await ask('GET', '/api/x'), 'stable');
    assert.equal(await ask('GET', '/api/x', 'X-Canary: 1\r\n'), 'canary');
    assert.equal(await ask('GET', '/api/x', 'x-canary: 2\r\n'), 'stable', 'values are exact');
    assert.equal(
      await ask('GET', '/api/x', 'X-Canary: 0\r\nX-Canary: 1\r\n'),
      'canary',
      'one of repeated fields',
    );
    assert.equal(await ask('POST', '/api/x'), 'write');
    assert.equal(
      await ask('PUT', '/api/x', 'X-Canary: 1\r\n'),
      'canary',
      'config order among conditional routes',
    );
    assert.equal(await ask('DELETE', '/api/x'), 'stable');
    assert.equal(await ask('GET', '/other', 'X-Debug: yes\r\n'), 'debug', '"*": present, any value');
    assert.equal(await ask('GET', '/other'), 'root');
    assert.equal(
      await ask('GET', '/api/x', 'X-Debug: yes\r\n'),
      'stable',
      'the longest prefix still comes first',
    );
    c.close();

    const session = connectH2(`http://${z.addr('web')}`);
    const s = session.request({ ':path': '/api/y', 'x-canary': '1' });
    const body: Buffer[] = [];
    s.on('data', (d: Buffer) => body.push(d));
    await once(s, 'end');
    session.close();
    assert.equal(Buffer.concat(body).toString(), 'canary');
    // routes of one prefix keep apart in the log (and metrics, limiters): conditions are in the name
    assert.deepEqual([...new Set(z.access.map((l) => l.route))].sort(), [
      '*/',
      '*/ [x-debug: *]',
      '*/api',
      '*/api [POST, PUT]',
      '*/api [X-Canary: 1]',
    ]);
  } finally {
    await z.stop();
  }
});

test('paths are normalised before routing: route clients cannot be walked around', async () => {
  const o = await startOrigin((req, res) => res.end(req.url));
  after(() => o.close());
  const cfg = (merge: string) => `
upstreams:
  app: { servers: [${o.address}] }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    ${merge}
    upstream: app
    routes:
      - { match: { path_prefix: /admin }, upstream: app, clients: { allow: [192.0.2.1] } }
`;
  const z = await startRuntime(cfg(''));
  try {
    const c = await KeepAliveClient.open(z.addr('web'));
    const ask = async (path: string) => {
      const r = await c.send(`GET ${path} HTTP/1.1\r\nHost: a.test\r\n\r\n`);
      return `${r.status} ${r.body.toString()}`;
    };
    assert.equal(await ask('/public/x'), '200 /public/x');
    for (const sneaky of ['/public/../admin/x', '/%61dmin/x', '//admin/x', '/./admin/x', '/p/%2e%2e/admin']) {
      assert.match(await ask(sneaky), /^403 /, sneaky);
    }
    // the upstream is sent the path that was routed
    assert.equal(await ask('/public/./a/../b//c?q=/../x'), '200 /public/b/c?q=/../x');
    assert.equal(await ask('/public/%7euser'), '200 /public/~user');
    const up = await c.send('GET /../etc/passwd HTTP/1.1\r\nHost: a.test\r\n\r\n');
    assert.equal(up.status, 400);
    assert.equal(up.headers.get('x-zipline-error')?.[0], 'ZL_HTTP_BAD_REQUEST');
    if (!c.closed) await once(c.socket, 'close'); // a 400 closes the connection (else: the test's timeout)
    assert.equal(z.access.at(-1)?.path, '/../etc/passwd', 'the log keeps what the client sent');

    // HTTP/2 requests are normalised the same way
    const session = connectH2(`http://${z.addr('web')}`);
    const s = session.request({ ':path': '/x/../admin' });
    const [headers] = (await once(s, 'response')) as [Record<string, unknown>];
    s.resume();
    session.close();
    assert.equal(headers[':status'], 403);
  } finally {
    await z.stop();
  }
  const keep = await startRuntime(cfg('merge_slashes: false'));
  try {
    const c = await KeepAliveClient.open(keep.addr('web'));
    const r = await c.send('GET //admin/x HTTP/1.1\r\nHost: a.test\r\n\r\n');
    assert.equal(`${r.status} ${r.body.toString()}`, '200 //admin/x', '`//` kept: not the /admin route');
    c.close();
  } finally {
    await keep.stop();
  }
});

test('config: routes differing only by conditions are distinct; identical ones are refused', () => {
  const issues = (routes: string): string => {
    const r = loadConfigText(
      `listeners: [{ protocol: http, listen: 127.0.0.1:0, routes: [${routes}] }]\n`,
      {},
    );
    return r.ok ? '' : r.issues.map((i) => `${i.path}: ${i.message}`).join('\n');
  };
  const a = '{ match: { path_prefix: /a, headers: { X-V: "2" } }, respond: {} }';
  assert.equal(issues(`${a}, { match: { path_prefix: /a }, respond: {} }`), '');
  assert.match(issues(`${a}, ${a}`), /routes\[1\]\.match.*same match as routes\[0\]/);
  assert.match(issues('{ match: { methods: [get] }, respond: {} }'), /a method in capitals/);
});
