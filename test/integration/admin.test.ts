/** The admin server: health, readiness, stats, metrics, auth, hostile input. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { after, describe, test } from 'node:test';
import { controlRefused, exposureWarning } from '../../src/admin/auth.js';
import { answerClientError } from '../../src/admin/client-error.js';
import { loadConfigText } from '../../src/config/load.js';
import { have } from '../helpers/daemons.js';
import { fillToCap, get, type KeepAliveClient, profileAfterLeaving, rawRequest } from '../helpers/http.js';
import {
  closeServer,
  dial,
  listen,
  port,
  refusedPort,
  splitAddress,
  tcpEcho,
  until,
} from '../helpers/net.js';
import { startRuntime } from '../helpers/zipline.js';

/** An IPv4 address of this host that is not loopback, to be a peer from "another host". */
const NON_LOOPBACK = Object.values(networkInterfaces())
  .flat()
  .find((i) => i !== undefined && i.family === 'IPv4' && !i.internal)?.address;

const servers: Server[] = [];
after(async () => {
  for (const s of servers) await closeServer(s);
});

const CONTRACT_METRICS = [
  'zipline_downstream_connections_active',
  'zipline_requests_active',
  'zipline_request_duration_seconds',
  'zipline_upstream_server_healthy',
  'zipline_upstream_connect_failures_total',
  'zipline_retries_total',
  'zipline_circuit_open',
  'zipline_tunnel_sessions_active',
  'zipline_tunnel_frames_total',
  'zipline_tunnel_protocol_errors_total',
  'zipline_tunnel_rtt_seconds',
  'zipline_shm_messages_total',
  'zipline_process_cpu_seconds_total',
  'zipline_process_resident_memory_bytes',
];

async function raw(address: string, bytes: string | Buffer): Promise<string> {
  const [host, p] = [address.split(':')[0], Number(address.split(':')[1])];
  const s = connect({ host, port: p });
  await once(s, 'connect');
  s.write(bytes);
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  await once(s, 'close');
  return Buffer.concat(chunks).toString();
}

describe('admin', () => {
  test('healthz, readyz, stats per server, metrics with the contract names', async () => {
    const echo = await tcpEcho();
    servers.push(echo);
    const dead = await refusedPort();
    const z = await startRuntime(
      `
admin: { listen: 127.0.0.1:0 }
upstreams:
  up: { servers: ["127.0.0.1:${port(echo)}", "127.0.0.1:${dead}"] }
  gone: { servers: ["127.0.0.1:${dead}"], health_check: { type: tcp, interval: 100ms, timeout: 50ms, fall: 1 } }
  unnamed: { servers: ["nowhere.invalid:80"] }
listeners: [{ name: t, protocol: tcp, listen: 127.0.0.1:0, upstream: up }]
`,
      // a name the resolver does not know (only `unnamed` has one)
      {
        lookup: (host, cb) =>
          cb(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' }), []),
      },
    );
    try {
      const base = z.rt.admin.url();
      assert.equal((await fetch(`${base}healthz`)).status, 200);
      await until(
        async () => (await fetch(`${base}readyz`)).status === 503,
        'readyz 503: upstream gone has no healthy server',
      );
      const ready = (await (await fetch(`${base}readyz`)).json()) as { reasons: string[] };
      assert.deepEqual(ready.reasons, [
        'upstream gone: no healthy server',
        'upstream unnamed: no server address resolved',
      ]);
      const stats = (await (await fetch(`${base}stats`)).json()) as {
        listeners: Record<string, { address: string }>;
        upstreams: Record<
          string,
          {
            servers: {
              address: string;
              state: string;
              active: number;
              total: number;
              failures: number;
              ewma_latency_ms: number;
            }[];
          }
        >;
      };
      assert.equal(stats.listeners.t?.address, z.addr('t'));
      const up = stats.upstreams.up?.servers ?? [];
      assert.equal(up.length, 2);
      for (const s of up)
        for (const k of ['state', 'active', 'total', 'failures', 'ewma_latency_ms']) assert.ok(k in s, k);
      assert.equal(stats.upstreams.gone?.servers[0]?.state, 'unhealthy');
      const res = await fetch(`${base}metrics`);
      assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
      const text = await res.text();
      for (const name of CONTRACT_METRICS) assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name);
      // promtool's naming rule: `_total` only on counters
      const misnamed = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)]
        .filter(([, name, type]) => type !== 'counter' && name?.endsWith('_total'))
        .map(([, name]) => name);
      assert.deepEqual(misnamed, []);
      assert.match(
        text,
        new RegExp(`zipline_upstream_server_healthy\\{upstream="gone",server="127.0.0.1:${dead}"\\} 0`),
      );
      assert.match(
        text,
        new RegExp(`zipline_upstream_server_healthy\\{upstream="up",server="127.0.0.1:${port(echo)}"\\} 1`),
      );
      const dash = await fetch(base);
      assert.match(await dash.text(), /<title>zipline<\/title>/);
      assert.equal((await fetch(`${base}nope`)).headers.get('x-zipline-error'), 'ZL_ADMIN_NOT_FOUND');
      // a path that starts with '//' is a path, not an authority (it was the dashboard at '/')
      assert.equal((await fetch(`${base}/stats`)).status, 404);
      // an absolute-form target that is no URL is the client's error (it was a 500)
      const bad = await rawRequest(
        new URL(base).host,
        'GET http://[bad HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      );
      assert.match(bad.data.toString(), /^HTTP\/1\.1 400 /);
      // a known endpoint with another method: 405 and what it takes; HEAD is GET without a body
      const del = await fetch(`${base}reload`, { method: 'DELETE' });
      assert.equal(del.status, 405);
      assert.equal(del.headers.get('allow'), 'POST');
      assert.equal(del.headers.get('x-zipline-error'), 'ZL_ADMIN_METHOD_NOT_ALLOWED');
      const post = await fetch(`${base}stats`, { method: 'POST' });
      assert.equal(post.status, 405);
      assert.equal(post.headers.get('allow'), 'GET, HEAD');
      const head = await fetch(`${base}metrics`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(await head.text(), '');
    } finally {
      await z.stop();
    }
  });

  test('garbage on the admin port gets a 400, not a crash', async () => {
    const z = await startRuntime('admin: { listen: 127.0.0.1:0 }\n');
    try {
      const addr = z.rt.admin.url().slice(7, -1);
      assert.match(
        await raw(addr, Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x01, 0x00, 0x00])),
        /^HTTP\/1\.1 400 /,
      );
      assert.match(
        await raw(
          addr,
          'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n',
        ),
        /^HTTP\/1\.1 400 /,
      );
      assert.match(await raw(addr, `GET /${'a'.repeat(100_000)} HTTP/1.1\r\n\r\n`), /^HTTP\/1\.1 4\d\d /);
      assert.equal((await fetch(`${z.rt.admin.url()}healthz`)).status, 200, 'still serving');
      const text = await (await fetch(`${z.rt.admin.url()}metrics`)).text();
      const counted =
        /^zipline_connection_errors_total\{listener="admin",code="ZL_ADMIN_BAD_REQUEST"\} (\d+)$/m.exec(text);
      assert.ok(counted !== null && Number(counted[1]) >= 3, 'the three refusals are counted');
    } finally {
      await z.stop();
    }
  });

  test('admin.max_connections: one more is closed unanswered and counted; a reload moves the cap', async () => {
    const yaml = (n: number): string => `admin: { listen: 127.0.0.1:0, max_connections: ${n} }\n`;
    const z = await startRuntime(yaml(3));
    const clients: KeepAliveClient[] = [];
    let scrapesRefused = 0;
    const refusedCount = async (): Promise<number | null> => {
      const r = await rawRequest(
        z.rt.admin.url().slice(7, -1),
        get('/metrics', 'x', 'Connection: close\r\n'),
      );
      // a scrape sent before the server saw a held connection close is refused (and counted) too
      if (r.data.length === 0) scrapesRefused++;
      const m =
        /^zipline_downstream_rejected_total\{listener="admin",code="ZL_LISTENER_OVER_LIMIT"\} (\d+)$/m.exec(
          r.data.toString(),
        );
      return m === null ? null : Number(m[1]);
    };
    try {
      const addr = z.rt.admin.url().slice(7, -1);
      const first = await fillToCap(addr, 3, '/healthz');
      clients.push(...first.clients);
      assert.equal(first.extra.closed, true, 'the fourth connection is closed');
      assert.equal(first.extra.data.length, 0, 'unanswered');
      // one held connection goes: there is room again (once the server has seen the close)
      clients.shift()?.close();
      assert.equal(await until(refusedCount, 'a metrics scrape answered'), 1 + scrapesRefused);

      const next = loadConfigText(yaml(5), {});
      assert.ok(next.ok);
      await z.rt.reload(next.config);
      const second = await fillToCap(addr, 3, '/healthz'); // 2 held before + 3 = 5
      clients.push(...second.clients);
      assert.equal(second.extra.data.length, 0, 'the sixth is refused at the new cap');
      for (const c of clients.splice(0)) c.close();
      assert.equal(await until(refusedCount, 'a metrics scrape answered'), 2 + scrapesRefused);
    } finally {
      for (const c of clients) c.close();
      await z.stop();
    }
  });

  test('clients that never read their 400 do not keep admin.max_connections taken: they are closed after the lingering close (5 s)', async () => {
    const z = await startRuntime('admin: { listen: 127.0.0.1:0, max_connections: 2 }\n');
    const address = z.rt.admin.url().slice(7, -1);
    const held = [await dial(address), await dial(address)];
    try {
      // refused, answered and half-closed by zipline, but never read (so never closed) by them
      for (const s of held) s.write('NOT HTTP\r\n\r\n');
      const healthz = async (): Promise<boolean> =>
        (await rawRequest(address, get('/healthz', 'x', 'Connection: close\r\n'), 2000)).data.includes(
          ' 200 ',
        );
      await until(async () => !(await healthz()), 'both slots taken by the refused clients');
      const t0 = Date.now();
      await until(healthz, 'a slot given back', 10_000, 200);
      assert.ok(Date.now() - t0 < 8000, `within the linger: ${Date.now() - t0} ms`);
    } finally {
      for (const s of held) s.destroy();
      await z.stop();
    }
  });

  test("the parser's refusals: a timed-out request head is 408 ZL_ADMIN_REQUEST_TIMEOUT, a malformed one 400", async () => {
    const answer = async (code: string): Promise<string> => {
      const server = await listen(
        createServer((sock) =>
          answerClientError(
            Object.assign(new Error(code), { code }),
            sock,
            'admin',
            'ZL_ADMIN_BAD_REQUEST',
            'ZL_ADMIN_REQUEST_TIMEOUT',
          ),
        ),
      );
      try {
        return await raw(`127.0.0.1:${port(server)}`, '');
      } finally {
        await closeServer(server);
      }
    };
    const late = await answer('ERR_HTTP_REQUEST_TIMEOUT');
    assert.match(late, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.match(late, /x-zipline-error: ZL_ADMIN_REQUEST_TIMEOUT\r\n/);
    assert.match(late, /connection: close\r\n/);
    const bad = await answer('HPE_INVALID_METHOD');
    assert.match(bad, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.match(bad, /x-zipline-error: ZL_ADMIN_BAD_REQUEST\r\n/);
  });

  test('a token protects everything but /healthz', async () => {
    const z = await startRuntime('admin: { listen: 127.0.0.1:0, token: s3cret }\n');
    try {
      const base = z.rt.admin.url();
      assert.equal((await fetch(`${base}healthz`)).status, 200);
      const no = await fetch(`${base}stats`);
      assert.equal(no.status, 401);
      assert.equal(no.headers.get('x-zipline-error'), 'ZL_ADMIN_UNAUTHORIZED');
      assert.equal((await fetch(`${base}stats`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
      assert.equal(
        (await fetch(`${base}metrics`, { headers: { authorization: 'Bearer s3cret' } })).status,
        200,
      );
      assert.equal((await fetch(`${base}reload`, { method: 'POST' })).status, 401);
    } finally {
      await z.stop();
    }
  });

  test('bound beyond loopback without a token is warned about; loopback or a token is not', () => {
    for (const a of ['0.0.0.0', '::', '10.1.2.3', 'fd00::1'])
      assert.match(exposureWarning(a, '') ?? '', /without admin\.token/, a);
    for (const a of ['127.0.0.1', '127.3.2.1', '::1', '::ffff:127.0.0.1'])
      assert.equal(exposureWarning(a, ''), null, a);
    assert.equal(exposureWarning('0.0.0.0', 's3cret'), null);
  });

  test('without a token, reload and profiles are refused to other hosts (403); reads stay open; a token or loopback lifts it', () => {
    for (const path of ['/reload', '/debug/profile']) {
      for (const peer of ['10.1.2.3', '192.168.0.9', 'fd00::1', '::ffff:10.0.0.1'])
        assert.equal(controlRefused(path, '', peer), true, `${path} from ${peer}`);
      for (const peer of ['127.0.0.1', '127.9.9.9', '::1', '::ffff:127.0.0.1'])
        assert.equal(controlRefused(path, '', peer), false, `${path} from ${peer}`);
      assert.equal(controlRefused(path, 's3cret', '10.1.2.3'), false, `${path} with a token`);
    }
    for (const path of ['/stats', '/metrics', '/readyz', '/'])
      assert.equal(controlRefused(path, '', '10.1.2.3'), false, path);
  });

  test("bound to 0.0.0.0 without a token: a peer from this host's non-loopback address is refused POST /reload, served /metrics", {
    skip: NON_LOOPBACK === undefined ? 'this host has no non-loopback IPv4 address' : false,
  }, async () => {
    const z = await startRuntime('admin: { listen: 0.0.0.0:0 }\n');
    try {
      const p = new URL(z.rt.admin.url()).port;
      const base = `http://${NON_LOOPBACK}:${p}/`;
      const reload = await fetch(`${base}reload`, { method: 'POST' });
      assert.equal(reload.status, 403);
      assert.equal(reload.headers.get('x-zipline-error'), 'ZL_ADMIN_FORBIDDEN');
      assert.equal((await fetch(`${base}debug/profile?seconds=1`)).status, 403);
      assert.equal((await fetch(`${base}metrics`)).status, 200);
      // from loopback it is served (this runtime has no config file to read again: 422, not 403)
      const local = await fetch(`http://127.0.0.1:${p}/reload`, { method: 'POST' });
      assert.notEqual(local.headers.get('x-zipline-error'), 'ZL_ADMIN_FORBIDDEN');
      assert.ok([200, 422].includes(local.status), String(local.status));
    } finally {
      await z.stop();
    }
  });

  test('the dashboard in a real browser (headless chromium): every listener with where it goes, a live rate per server', {
    skip: have('chromium') ? false : 'chromium not installed',
  }, async () => {
    const echo = await tcpEcho();
    servers.push(echo);
    const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
upstreams: { up: { servers: ["127.0.0.1:${port(echo)}"] } }
listeners:
  - { name: t, protocol: tcp, listen: 127.0.0.1:0, upstream: up }
  - { name: web, protocol: http, listen: 127.0.0.1:0, upstream: up }
`);
    // connections keep coming while the page polls, so each poll sees the total move
    let stop = false;
    const traffic = (async () => {
      while (!stop) (await dial(z.addr('t'))).destroy();
    })();
    // and HTTP requests, which the echo server answers with garbage: 502s
    const [host, p] = splitAddress(z.addr('web'));
    const requests = (async () => {
      while (!stop) await fetch(`http://${host}:${p}/`).catch(() => null);
    })();
    try {
      const dom = await new Promise<string>((resolve, reject) => {
        execFile(
          'chromium',
          [
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--disable-background-networking',
            '--virtual-time-budget=2500',
            '--dump-dom',
            z.rt.admin.url(),
          ],
          { timeout: 30_000, maxBuffer: 4 * 1024 * 1024 },
          (err, stdout) => (err ? reject(err) : resolve(stdout)),
        );
      });
      assert.match(dom, /<td>t<\/td><td>tcp<\/td><td><code>[^<]+<\/code><\/td><td>up<\/td>/);
      assert.match(dom, /<td>web<\/td><td>http<\/td><td><code>[^<]+<\/code><\/td><td>up<\/td>/);
      assert.match(dom, /<th>per s<\/th>/);
      assert.match(dom, /class="rate">\d+\.\d</, 'a rate once two polls are in');
      // the HTTP listener's requests: total, a rate, 4xx, and its 5xx marked
      assert.match(
        dom,
        /<td>web<\/td>.*?<td>\d+<\/td><td>[1-9]\d*<\/td><td class="rate">\d+\.\d<\/td><td>0<\/td><td class="down">[1-9]\d*<\/td>/,
      );
      const rendered = dom.slice(dom.indexOf('<div id="out">'), dom.indexOf('<script>'));
      assert.doesNotMatch(rendered, /undefined|NaN/);
    } finally {
      stop = true;
      await traffic;
      await requests;
      await z.stop();
    }
  });

  test('/debug/profile returns a CPU profile', async () => {
    const z = await startRuntime('admin: { listen: 127.0.0.1:0 }\n');
    try {
      // two at once: whichever arrives second is refused (either order)
      const both = await Promise.all([
        fetch(`${z.rt.admin.url()}debug/profile?seconds=1`),
        fetch(`${z.rt.admin.url()}debug/profile?seconds=1`),
      ]);
      const busy = both.filter((r) => r.status === 409);
      assert.equal(busy.length, 1, 'one profile at a time');
      assert.equal(busy[0]?.headers.get('x-zipline-error'), 'ZL_ADMIN_BUSY');
      const res = both.find((r) => r.status !== 409);
      assert.ok(res);
      assert.equal(res.status, 200);
      const profile = (await res.json()) as { nodes: unknown[]; startTime: number; endTime: number };
      assert.ok(Array.isArray(profile.nodes) && profile.nodes.length > 0);
      assert.ok(profile.endTime > profile.startTime);
      for (const bad of ['0', '61', '1e1', '1.0', '', 'abc'])
        assert.equal((await fetch(`${z.rt.admin.url()}debug/profile?seconds=${bad}`)).status, 400, bad);
      // a client that leaves ends its profile (as Go's pprof does): the next is served at once,
      // not refused for the 60 s it had asked for
      await profileAfterLeaving(z.rt.admin.url(), '');
    } finally {
      await z.stop();
    }
  });
});
