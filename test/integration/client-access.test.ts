/**
 * `listeners[].clients` on every listener kind, with clients on different loopback addresses
 * (127.0.0.1, .2 and .3 all reach a 127.0.0.1 listener on Linux): refused connections are closed
 * before any byte or handshake, refused datagrams never reach the server, both are counted and
 * leave no access line; the PROXY header's address is the one checked; a reload applies to new
 * connections.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { connect as connectTls } from 'node:tls';
import { loadConfigText } from '../../src/config/load.js';
import { okAndEcho } from '../helpers/http.js';
import { seriesValue } from '../helpers/metrics.js';
import { closeServer, listen, port, splitAddress, udpEcho, until } from '../helpers/net.js';
import { ROOT, startRuntime } from '../helpers/zipline.js';

const TLS_DIR = `${ROOT}test/fixtures/tls`;
const GET = 'GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n';

const metric = (name: string, listener: string, code: string): Promise<number> =>
  seriesValue(`${name}{listener="${listener}",code="${code}"}`);

const denied = (listener: string): Promise<number> =>
  metric('zipline_downstream_rejected_total', listener, 'ZL_CLIENT_DENIED');

/**
 * Connects from `from`, writes `data`, and reads until the connection closes. `end`: half-close
 * after writing (not for HTTP: a client FIN aborts its request, `client_fin: abort`).
 */
async function exchange(address: string, from: string, data: string | Buffer, end = true): Promise<string> {
  const [host, port] = splitAddress(address);
  const s = connect({ host, port, localAddress: from });
  const got: Buffer[] = [];
  s.on('data', (d: Buffer) => got.push(d));
  s.on('error', () => {}); // a refused connection may be reset
  await once(s, 'connect');
  if (end) s.end(data);
  else s.write(data);
  // not events.once: it rejects on 'error', and a refused connection may be reset
  if (!s.closed) await new Promise((resolve) => s.once('close', resolve));
  return Buffer.concat(got).toString('latin1');
}

describe('listeners[].clients', () => {
  /** `echo` (the TCP echo server) and `web` (the HTTP origin). */
  const peers = okAndEcho();

  test('tcp, http, socks5: a refused client is closed without a byte, counted, not logged; others are served', async () => {
    const z = await startRuntime(`${peers.upstreams()}
listeners:
  - { name: t, protocol: tcp, listen: 127.0.0.1:0, upstream: echo, clients: { allow: [127.0.0.0/8], deny: [127.0.0.3] } }
  - { name: h, protocol: http, listen: 127.0.0.1:0, upstream: web, clients: { allow: [127.0.0.2] } }
  - { name: p, protocol: socks5, listen: 127.0.0.1:0, allow: ['127.0.0.1:*'], clients: { deny: [127.0.0.1] } }
`);
    try {
      assert.equal(await exchange(z.addr('t'), '127.0.0.1', 'hello'), 'hello');
      assert.equal(await exchange(z.addr('t'), '127.0.0.3', 'hello'), '');
      assert.equal(await denied('t'), 1);

      assert.match(
        await exchange(z.addr('h'), '127.0.0.2', GET, false),
        /^HTTP\/1\.1 200 [\s\S]*\r\n\r\nok$/,
      );
      assert.equal(await exchange(z.addr('h'), '127.0.0.1', GET, false), '', 'no 403: closed unanswered');
      assert.equal(await denied('h'), 1);
      assert.equal(peers.origin.requests, 1);

      // SOCKS5 greeting (no authentication): a refused client gets no method selection
      const hello = Buffer.from([5, 1, 0]);
      assert.deepEqual([...Buffer.from(await exchange(z.addr('p'), '127.0.0.2', hello), 'latin1')], [5, 0]);
      assert.equal(await exchange(z.addr('p'), '127.0.0.1', hello), '');
      assert.equal(await denied('p'), 1);

      // refused connections leave no access line; the three served ones (tcp, http, socks5) do
      await until(() => z.access.length === 3, 'the served connections to be logged');
      assert.deepEqual(z.access.map((l) => l.client_ip).sort(), ['127.0.0.1', '127.0.0.2', '127.0.0.2']);
    } finally {
      await z.stop();
    }
  });

  test('a refused client that resets at once (its address then unknown) still gets nothing through', async () => {
    // a server that counts what reaches it
    let reached = 0;
    const server = createServer((s) => {
      reached++;
      s.destroy();
    });
    await listen(server);
    const z = await startRuntime(`
upstreams:
  counted: { servers: [127.0.0.1:${port(server)}] }
listeners:
  - { name: t, protocol: tcp, listen: 127.0.0.1:0, upstream: counted, clients: { deny: [127.0.0.3] } }
`);
    try {
      const [host, p] = splitAddress(z.addr('t'));
      for (let i = 0; i < 200; i++) {
        // connect, send, reset: zipline may find the kernel no longer names the peer
        const s = connect({ host, port: p, localAddress: '127.0.0.3' });
        s.on('error', () => {});
        await once(s, 'connect');
        s.write('x');
        s.resetAndDestroy();
        await once(s, 'close');
      }
      // one allowed client afterwards: when it has reached the server, the others had their turn
      await exchange(z.addr('t'), '127.0.0.1', 'hello');
      await until(() => reached >= 1, 'the allowed client to reach the server');
      assert.equal(reached, 1, 'only the allowed client reached the server');
    } finally {
      await z.stop();
      await closeServer(server);
    }
  });

  test('https: a refused client gets no TLS handshake', async () => {
    const z = await startRuntime(`
upstreams:
  web: { servers: [${peers.origin.address}] }
listeners:
  - name: s
    protocol: https
    listen: 127.0.0.1:0
    upstream: web
    tls: { cert: ${TLS_DIR}/a.crt, key: ${TLS_DIR}/a.key }
    clients: { deny: [127.0.0.1] }
`);
    try {
      const [host, port] = splitAddress(z.addr('s'));
      const tlsGet = (from: string): Promise<string> =>
        new Promise((resolve, reject) => {
          const raw = connect({ host, port, localAddress: from });
          raw.on('error', reject);
          const s = connectTls({ socket: raw, servername: 'a.test', rejectUnauthorized: false });
          const got: Buffer[] = [];
          s.on('secureConnect', () => s.write(GET));
          s.on('data', (d: Buffer) => got.push(d));
          s.on('error', reject);
          s.on('close', () => resolve(Buffer.concat(got).toString('latin1')));
        });
      assert.match(await tlsGet('127.0.0.2'), /^HTTP\/1\.1 200 /);
      await assert.rejects(
        tlsGet('127.0.0.1'),
        /socket disconnected before secure TLS connection|ECONNRESET/,
      );
      assert.equal(await denied('s'), 1);
      // the server never saw a ClientHello it failed on
      assert.equal(await metric('zipline_http_errors_total', 's', 'ZL_HTTP_BAD_REQUEST'), 0);
    } finally {
      await z.stop();
    }
  });

  test('udp: datagrams from a refused client never reach the server and get no session', async () => {
    const server = await udpEcho();
    const { createSocket } = await import('node:dgram');
    const received: string[] = [];
    server.on('message', (_m, r) => received.push(r.address));
    const z = await startRuntime(`
upstreams:
  u: { servers: [127.0.0.1:${server.address().port}] }
listeners:
  - { name: u, protocol: udp, listen: 127.0.0.1:0, upstream: u, udp: { responses: 1 }, clients: { allow: [127.0.0.2] } }
`);
    const [host, port] = splitAddress(z.addr('u'));
    const bound = async (address: string) => {
      const s = createSocket('udp4');
      await new Promise<void>((resolve) => s.bind(0, address, () => resolve()));
      return s;
    };
    const refused = await bound('127.0.0.1');
    const served = await bound('127.0.0.2');
    try {
      const replies: string[] = [];
      refused.on('message', (m) => replies.push(`refused:${m}`));
      served.on('message', (m) => replies.push(`served:${m}`));
      refused.send('a', port, host);
      await until(
        async () => (await metric('zipline_udp_dropped_total', 'u', 'ZL_CLIENT_DENIED')) === 1,
        'the refused datagram to be counted',
      );
      served.send('b', port, host);
      await until(() => replies.length > 0, 'the served client to get its reply');
      assert.deepEqual(replies, ['served:b']);
      assert.equal(received.length, 1, 'only the served datagram reached the server');
    } finally {
      refused.close();
      served.close();
      await z.stop();
      server.close();
    }
  });

  test('behind a PROXY protocol peer the header names the client checked; a reload applies to new connections', async () => {
    const yaml = (deny: string) => `
admin: { listen: 127.0.0.1:0 }
log: { level: warn, access: off }
upstreams:
  web: { servers: [${peers.origin.address}] }
listeners:
  - name: pp
    protocol: http
    listen: 127.0.0.1:0
    upstream: web
    proxy_protocol: { from: [127.0.0.1] }
    clients: { deny: [${deny}] }
`;
    const z = await startRuntime(yaml('203.0.113.0/24'));
    const viaBalancer = (client: string) => `PROXY TCP4 ${client} 192.0.2.1 5555 80\r\n${GET}`;
    try {
      const before = peers.origin.requests;
      assert.match(
        await exchange(z.addr('pp'), '127.0.0.1', viaBalancer('198.51.100.7'), false),
        /^HTTP\/1\.1 200 /,
      );
      assert.equal(await exchange(z.addr('pp'), '127.0.0.1', viaBalancer('203.0.113.7'), false), '');
      assert.equal(await denied('pp'), 1);
      // a direct client (not a PROXY peer) is checked on its own address
      assert.match(await exchange(z.addr('pp'), '127.0.0.2', GET, false), /^HTTP\/1\.1 200 /);
      assert.equal(peers.origin.requests, before + 2);

      // an open keep-alive connection stays; new ones meet the new list. Its first answer proves
      // zipline has taken it (a completed connect alone does not: the accept may come later)
      const [host, port] = splitAddress(z.addr('pp'));
      const open: Socket = connect({ host, port, localAddress: '127.0.0.2' });
      open.on('error', () => {});
      const got: Buffer[] = [];
      open.on('data', (d: Buffer) => got.push(d));
      open.write('GET / HTTP/1.1\r\nHost: a.test\r\n\r\n');
      await until(() => Buffer.concat(got).toString('latin1').endsWith('ok'), 'the first answer');
      const next = loadConfigText(yaml('127.0.0.2'), {});
      assert.ok(next.ok);
      const report = await z.rt.reload(next.config);
      assert.equal(report.result, 'applied');
      assert.equal(await exchange(z.addr('pp'), '127.0.0.2', GET, false), '');
      assert.equal(await denied('pp'), 2);
      got.length = 0;
      open.write(GET);
      await once(open, 'close');
      assert.match(Buffer.concat(got).toString('latin1'), /^HTTP\/1\.1 200 /);
      assert.match(
        await exchange(z.addr('pp'), '127.0.0.1', viaBalancer('203.0.113.7'), false),
        /^HTTP\/1\.1 200 /,
      );
    } finally {
      await z.stop();
    }
  });

  test('limits.max_connections_per_client: a client at its cap gets no more until one closes; others are served', async () => {
    const z = await startRuntime(`${peers.upstreams()}
listeners:
  - { name: c, protocol: tcp, listen: 127.0.0.1:0, upstream: echo, limits: { max_connections_per_client: 2 } }
  - name: cp
    protocol: http
    listen: 127.0.0.1:0
    upstream: web
    proxy_protocol: { from: [127.0.0.1] }
    limits: { max_connections_per_client: 1 }
`);
    const [host, port] = splitAddress(z.addr('c'));
    const openFrom = async (from: string): Promise<Socket> => {
      const s = connect({ host, port, localAddress: from });
      s.on('error', () => {});
      await once(s, 'connect');
      return s;
    };
    const tcp = z.rt.listeners.get('c');
    assert.ok(tcp);
    try {
      const held = [await openFrom('127.0.0.2'), await openFrom('127.0.0.2')];
      await until(() => tcp.activeCount() === 2, 'both connections to be taken');
      assert.equal(await exchange(z.addr('c'), '127.0.0.2', 'third'), '');
      assert.equal(await metric('zipline_downstream_rejected_total', 'c', 'ZL_CLIENT_CONNECTION_LIMIT'), 1);
      assert.equal(
        await exchange(z.addr('c'), '127.0.0.3', 'other'),
        'other',
        'another client is not held back',
      );
      held[0]?.destroy();
      await until(() => tcp.activeCount() === 1, 'the closed connection to be released');
      assert.equal(await exchange(z.addr('c'), '127.0.0.2', 'again'), 'again');
      held[1]?.destroy();

      // behind a PROXY peer the cap is per address the header names
      const [ph, pp] = splitAddress(z.addr('cp'));
      const first = connect({ host: ph, port: pp });
      first.on('error', () => {});
      await once(first, 'connect');
      first.write('PROXY TCP4 203.0.113.7 192.0.2.1 5555 80\r\n');
      const http = z.rt.listeners.get('cp');
      assert.ok(http);
      await until(() => http.activeCount() === 1, 'the first connection to be taken after its header');
      const viaBalancer = (client: string) => `PROXY TCP4 ${client} 192.0.2.1 5556 80\r\n${GET}`;
      assert.equal(await exchange(z.addr('cp'), '127.0.0.1', viaBalancer('203.0.113.7'), false), '');
      assert.match(
        await exchange(z.addr('cp'), '127.0.0.1', viaBalancer('198.51.100.7'), false),
        /^HTTP\/1\.1 200 /,
      );
      assert.equal(await metric('zipline_downstream_rejected_total', 'cp', 'ZL_CLIENT_CONNECTION_LIMIT'), 1);
      first.destroy();
    } finally {
      await z.stop();
    }
  });

  test('routes[].clients: a refused client gets 403 on that route only; real_ip_header names the client', async () => {
    const z = await startRuntime(`${peers.upstreams()}
listeners:
  - name: r
    protocol: http
    listen: 127.0.0.1:0
    trusted_proxies: [127.0.0.1]
    real_ip_header: X-Forwarded-For
    routes:
      - { match: { path_prefix: /admin }, upstream: web, clients: { allow: [127.0.0.2, 10.0.0.0/8], deny: [10.9.0.0/16] } }
      - { match: { path_prefix: / }, upstream: web }
`);
    try {
      const req = (path: string, xff = '') =>
        `GET ${path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n${xff === '' ? '' : `X-Forwarded-For: ${xff}\r\n`}\r\n`;
      assert.match(await exchange(z.addr('r'), '127.0.0.2', req('/admin/x'), false), /^HTTP\/1\.1 200 /);
      const refused = await exchange(z.addr('r'), '127.0.0.3', req('/admin/x'), false);
      assert.match(refused, /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*X-Zipline-Error: ZL_CLIENT_DENIED\r\n/);
      assert.match(await exchange(z.addr('r'), '127.0.0.3', req('/other'), false), /^HTTP\/1\.1 200 /);
      // through the trusted proxy (127.0.0.1): the address X-Forwarded-For names is judged
      assert.match(
        await exchange(z.addr('r'), '127.0.0.1', req('/admin', '10.1.2.3'), false),
        /^HTTP\/1\.1 200 /,
      );
      assert.match(
        await exchange(z.addr('r'), '127.0.0.1', req('/admin', '10.9.0.1'), false),
        /^HTTP\/1\.1 403 /,
      );
      assert.match(await exchange(z.addr('r'), '127.0.0.1', req('/admin'), false), /^HTTP\/1\.1 403 /);
      assert.equal(await metric('zipline_http_errors_total', 'r', 'ZL_CLIENT_DENIED'), 3);
      await until(() => z.access.filter((l) => l.status === 403).length === 3, 'the refusals to be logged');
      assert.deepEqual(
        z.access.filter((l) => l.status === 403).map((l) => l.client_ip),
        ['127.0.0.3', '10.9.0.1', '127.0.0.1'],
      );
    } finally {
      await z.stop();
    }
  });
});
