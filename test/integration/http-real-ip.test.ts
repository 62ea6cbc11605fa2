/**
 * `real_ip_header` through a real listener: behind a trusted HTTP proxy the client named in
 * `X-Forwarded-For` is the one logged, rate-limited and sent as `X-Real-IP`; a peer not in
 * `trusted_proxies` cannot choose its address.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, test } from 'node:test';
import { pino } from 'pino';
import { loadConfigText } from '../../src/config/load.js';
import { get, parseResponse, testPeers } from '../helpers/http.js';
import { splitAddress } from '../helpers/net.js';
import { startRuntime } from '../helpers/zipline.js';

const peers = testPeers();
after(() => peers.cleanup());

/** One request from local address `from`; the response's status and body. */
function request(address: string, from: string, text: string): Promise<{ status: number; body: string }> {
  const [host, port] = splitAddress(address);
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, localAddress: from }, () => s.write(text));
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const parsed = parseResponse(buf);
      if (parsed === null) return;
      s.destroy();
      resolve({ status: parsed.resp.status, body: parsed.resp.body.toString() });
    });
    s.on('error', reject);
  });
}

test('real_ip_header: X-Forwarded-For from a trusted proxy names the client for logs, rate limits and X-Real-IP', async () => {
  const origin = await peers.origin((req, res) =>
    res.end(`${req.headers['x-real-ip']}|${req.headers['x-forwarded-for']}`),
  );
  const z = await startRuntime(`
upstreams:
  app: { servers: [${origin.address}] }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    upstream: app
    trusted_proxies: [127.0.0.1, 10.0.0.0/8]
    real_ip_header: X-Forwarded-For
    rate_limit: { rate: 1/h, burst: 1 }
`);
  try {
    const via = (xff: string, path = '/') => get(path, 'a.test', `X-Forwarded-For: ${xff}\r\n`);
    const a = await request(z.addr('web'), '127.0.0.1', via('203.0.113.9, 10.1.1.1', '/a'));
    assert.equal(a.status, 200);
    assert.equal(a.body, '203.0.113.9|203.0.113.9, 10.1.1.1, 127.0.0.1');
    // another client behind the same proxy has its own count; the first is now over its limit
    assert.equal((await request(z.addr('web'), '127.0.0.1', via('198.51.100.1', '/b'))).status, 200);
    assert.equal((await request(z.addr('web'), '127.0.0.1', via('203.0.113.9', '/c'))).status, 429);
    // a peer not in trusted_proxies: its header is not believed (nor passed on)
    const d = await request(z.addr('web'), '127.0.0.2', via('198.51.100.77', '/d'));
    assert.equal(d.body, '127.0.0.2|127.0.0.2');
    assert.deepEqual(
      ['/a', '/b', '/c', '/d'].map((p) => z.access.find((l) => l.path === p)?.client_ip),
      ['203.0.113.9', '198.51.100.1', '203.0.113.9', '127.0.0.2'],
    );
  } finally {
    await z.stop();
  }
});

test('real_ip_header needs trusted_proxies', () => {
  const r = loadConfigText(
    'upstreams: { app: { servers: [127.0.0.1:1] } }\nlisteners: [{ protocol: http, listen: 127.0.0.1:0, upstream: app, real_ip_header: X-Real-IP }]\n',
    {},
  );
  assert.equal(r.ok, false);
  assert.match(
    !r.ok ? r.issues.map((i) => `${i.path}: ${i.message}`).join('\n') : '',
    /real_ip_header: needs `trusted_proxies`/,
  );
});

test('real_ip_header believed from every address on a listener beyond loopback: warned at start and by the reload that brings it', async () => {
  const warnings: string[] = [];
  const log = pino({ level: 'warn' }, { write: (line: string) => warnings.push(line) });
  const yaml = (trusted: string) => `
admin: { listen: 127.0.0.1:0 }
upstreams:
  app: { servers: [127.0.0.1:9] }
listeners:
  - { name: edge, protocol: http, listen: 0.0.0.0:0, upstream: app, trusted_proxies: [${trusted}], real_ip_header: X-Forwarded-For }
`;
  const believed = () => warnings.filter((w) => w.includes('believed from every address')).length;
  const config = (trusted: string) => {
    const r = loadConfigText(yaml(trusted), {});
    assert.ok(r.ok);
    return r.config;
  };
  const z = await startRuntime(yaml('0.0.0.0/0'), { log });
  try {
    assert.equal(believed(), 1, 'said at start');
    assert.match(warnings[0] ?? '', /"listener":"edge"/);
    assert.equal((await z.rt.reload(config('10.0.0.0/8'))).result, 'applied');
    assert.equal(believed(), 1, 'the balancers listed: nothing to say');
    assert.equal((await z.rt.reload(config('10.0.0.0/8, 0.0.0.0/0'))).result, 'applied');
    assert.equal(believed(), 2, 'said by the reload that brings it');
    assert.equal((await z.rt.reload(config('10.0.0.0/8, 0.0.0.0/0'))).result, 'applied');
    assert.equal(believed(), 2, 'not again for an unchanged setting');
  } finally {
    await z.stop();
  }
});
