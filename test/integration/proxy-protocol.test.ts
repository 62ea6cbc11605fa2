/**
 * The PROXY protocol with real peers: HAProxy `send-proxy-v2` in front of a tcp listener and
 * `accept-proxy` behind it, nginx `listen … proxy_protocol` reading `send_proxy` v1 and v2, curl
 * `--haproxy-protocol` on http, https and HTTP/2; hand-made headers for addresses no real client
 * here can claim; refused, late and unlisted headers.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect as connectH2 } from 'node:http2';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { connect as connectTls } from 'node:tls';
import { buildProxyHeader } from '../../src/proxy-protocol/header.js';
import { engine } from '../../src/tunnel/native/binding.js';
import { type Daemon, have, run, startHaproxy, startNginx } from '../helpers/daemons.js';
import { type Origin, startOrigin } from '../helpers/http.js';
import { seriesValue } from '../helpers/metrics.js';
import { closeServer, dial, port, readAll, splitAddress, tcpEcho, tcpServer, until } from '../helpers/net.js';
import { tempDir } from '../helpers/temp.js';
import { ROOT, startRuntime } from '../helpers/zipline.js';

const V1 = (src: string, sport: number): Buffer =>
  Buffer.from(`PROXY TCP4 ${src} 192.0.2.1 ${sport} 443\r\n`, 'latin1');
const GET10 = Buffer.from('GET / HTTP/1.0\r\n\r\n', 'latin1');
const TLS_DIR = `${ROOT}test/fixtures/tls`;

/** Writes `chunks` one write each (each after the previous is out), ends, and reads everything back. */
async function talk(address: string, chunks: Buffer[], end = true): Promise<string> {
  const [host, port] = splitAddress(address);
  const s = connect(port, host);
  const got: Buffer[] = [];
  s.on('data', (d: Buffer) => got.push(d));
  s.on('error', () => {});
  await once(s, 'connect');
  for (const c of chunks) await new Promise<void>((resolve) => s.write(c, () => resolve()));
  if (end) s.end();
  if (!s.closed) await once(s, 'close');
  return Buffer.concat(got).toString('latin1');
}

const counted = (listener: string, code: string): Promise<number> =>
  seriesValue(`zipline_connection_errors_total{listener="${listener}",code="${code}"}`);

/** Two passing active checks of upstream `hap`'s one server, and no failed one. */
async function checksPass(z: Awaited<ReturnType<typeof startRuntime>>, what: string): Promise<void> {
  const e = z.rt.upstreams.get('hap')?.endpoints[0];
  assert.ok(e);
  await until(() => e.checkPasses >= 2, what);
  assert.equal(e.checkFails, 0);
}

describe('PROXY protocol', {
  skip: have('nginx') && have('haproxy') && have('curl') ? false : 'needs nginx, haproxy and curl',
}, () => {
  let nginx: Daemon;
  before(async () => {
    // nginx reads a PROXY header (v1 or v2) and answers with the address it names
    nginx = await startNginx(
      (p) => `server {
  listen 127.0.0.1:${p} proxy_protocol;
  location / { return 200 "$proxy_protocol_addr $proxy_protocol_port\\n"; }
}`,
    );
  });
  after(() => nginx.stop());

  test('tcp: a listed peer names the client (access log, bytes after the header in the same read kept); send_proxy v1 and v2 pass it to nginx', async () => {
    const z = await startRuntime(`
upstreams:
  v2: { servers: [127.0.0.1:${nginx.port}], send_proxy: v2 }
  v1: { servers: [127.0.0.1:${nginx.port}], send_proxy: v1 }
listeners:
  - { name: in2, protocol: tcp, listen: 127.0.0.1:0, upstream: v2, proxy_protocol: { from: [127.0.0.0/8] } }
  - { name: in1, protocol: tcp, listen: 127.0.0.1:0, upstream: v1, proxy_protocol: { from: [127.0.0.1] } }
  - { name: direct, protocol: tcp, listen: 127.0.0.1:0, upstream: v2 }
`);
    try {
      // header and request in one write
      const a = await talk(z.addr('in2'), [Buffer.concat([V1('203.0.113.7', 5555), GET10])]);
      assert.match(a, /\r\n\r\n203\.0\.113\.7 5555\n$/);
      // a v2 header (IPv6, with a TLV) on its own, the request in a later write
      const v2 = buildProxyHeader(2, { ip: '2001:db8::7', port: 4444 }, { ip: '2001:db8::1', port: 443 });
      const withTlv = Buffer.concat([v2, Buffer.from([0x05, 0x00, 0x02, 0xab, 0xcd])]);
      withTlv.writeUInt16BE(v2.length - 16 + 5, 14);
      const b = await talk(z.addr('in1'), [withTlv, GET10]);
      assert.match(b, /\r\n\r\n2001:db8::7 4444\n$/);
      // no header from an unlisted listener: the connection's own address goes on
      const [host, port] = splitAddress(z.addr('direct'));
      const s = connect(port, host);
      await once(s, 'connect');
      const local = s.localPort;
      s.end(GET10);
      const body: Buffer[] = [];
      s.on('data', (d: Buffer) => body.push(d));
      await once(s, 'close');
      assert.match(Buffer.concat(body).toString(), new RegExp(`\\r\\n\\r\\n127\\.0\\.0\\.1 ${local}\\n$`));
      // an access line is written once both sockets have closed, which may come after the client's
      await until(() => z.access.length === 3, 'the three connections to end');
      const line = z.access.find((l) => l.listener === 'in2');
      assert.equal(line?.client_ip, '203.0.113.7');
      assert.equal(line?.client_port, 5555);
      assert.equal(line?.bytes_in, GET10.length, 'the header is not counted as client bytes');
      assert.equal(z.access.find((l) => l.listener === 'in1')?.client_ip, '2001:db8::7');
    } finally {
      await z.stop();
    }
  });

  test('tcp: bytes the client sends once the server is connected still reach it (the native pump takes the socket only once Node has stopped reading it)', {
    timeout: 30_000,
  }, async () => {
    // Node's stream reads ahead again on the tick after the header's read, even paused: libuv
    // and the pump thread then both watched the socket, and whatever libuv read first went into
    // a buffer nobody drained (1 connection in 200 through HAProxy). Many small writes after
    // the dial, on many connections, give libuv many chances to win that race.
    const dialed: (() => void)[] = [];
    const server = await tcpServer((s) => {
      let seen = Buffer.alloc(0);
      let header = true;
      s.on('data', (d: Buffer) => {
        if (!header) return void s.write(d);
        seen = Buffer.concat([seen, d]);
        const end = seen.indexOf('\r\n');
        if (end < 0) return;
        header = false;
        s.write(seen.subarray(end + 2));
        dialed.shift()?.();
      });
      s.on('end', () => s.end());
    });
    const z = await startRuntime(`
upstreams: { echo: { servers: [127.0.0.1:${port(server)}], send_proxy: v1 } }
listeners:
  - { name: in, protocol: tcp, listen: 127.0.0.1:0, upstream: echo, proxy_protocol: { from: [127.0.0.1] } }
`);
    try {
      for (let i = 0; i < 30; i++) {
        const connected = new Promise<void>((resolve) => dialed.push(resolve));
        const c = await dial(z.addr('in'));
        c.write(V1('203.0.113.7', 5555));
        await connected;
        let sent = '';
        for (let k = 0; k < 20; k++) {
          const piece = `${i}.${k};`;
          sent += piece;
          await new Promise<void>((resolve) => c.write(piece, () => setImmediate(resolve)));
        }
        c.end();
        assert.equal((await readAll(c)).toString(), sent, `connection ${i}`);
      }
    } finally {
      await z.stop();
      await closeServer(server);
    }
  });

  test("tcp: from a listed peer, a bad header or none in time closes the connection unanswered (counted, nothing dialed); an unlisted peer's header is only data", async () => {
    const z = await startRuntime(`
upstreams:
  v1: { servers: [127.0.0.1:${nginx.port}], send_proxy: v1 }
listeners:
  - { name: strict, protocol: tcp, listen: 127.0.0.1:0, upstream: v1, proxy_protocol: { from: [127.0.0.1], timeout: 300ms } }
  - { name: other, protocol: tcp, listen: 127.0.0.1:0, upstream: v1, proxy_protocol: { from: [10.0.0.0/8] } }
`);
    try {
      const bad0 = await counted('strict', 'ZL_PROXY_PROTOCOL');
      assert.equal(await talk(z.addr('strict'), [GET10]), '');
      assert.equal(await talk(z.addr('strict'), [Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n')]), '');
      assert.equal((await counted('strict', 'ZL_PROXY_PROTOCOL')) - bad0, 2);
      const late0 = await counted('strict', 'ZL_PROXY_PROTOCOL_TIMEOUT');
      const started = Date.now();
      assert.equal(await talk(z.addr('strict'), [Buffer.from('PROXY TCP4 1.2.3.4')], false), '');
      assert.ok(Date.now() - started >= 250, 'closed at the timeout, not before');
      assert.equal((await counted('strict', 'ZL_PROXY_PROTOCOL_TIMEOUT')) - late0, 1);
      assert.equal(
        z.access.filter((l) => l.listener === 'strict').length,
        0,
        'no upstream connection was made',
      );
      // 127.0.0.1 is not on `other`'s list: its header reaches nginx after zipline's own, as a bad request
      const out = await talk(z.addr('other'), [Buffer.concat([V1('203.0.113.7', 5555), GET10])]);
      assert.match(out, /^HTTP\/1\.1 400/);
      assert.doesNotMatch(out, /203\.0\.113\.7/);
    } finally {
      await z.stop();
    }
  });

  test('socks5 and http_proxy behind a balancer: the header names the client (access line, clients); others are served as they come', async () => {
    const echo = await tcpEcho();
    const ep = port(echo);
    const z = await startRuntime(`
listeners:
  - { name: s5, protocol: socks5, listen: 127.0.0.1:0, allow: ['127.0.0.1:*'], proxy_protocol: { from: [127.0.0.1] }, clients: { deny: [198.51.100.0/24] } }
  - { name: hp, protocol: http_proxy, listen: 127.0.0.1:0, allow: ['127.0.0.1:*'], proxy_protocol: { from: [127.0.0.1] } }
`);
    try {
      const connectReq = Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, ep >> 8, ep & 0xff]);
      const socks = (header: Buffer) =>
        talk(z.addr('s5'), [Buffer.concat([header, Buffer.from([5, 1, 0]), connectReq, Buffer.from('hi')])]);
      const out = Buffer.from(await socks(V1('203.0.113.7', 5555)), 'latin1');
      assert.deepEqual([...out.subarray(0, 3)], [5, 0, 5], 'method chosen, then the CONNECT reply');
      assert.equal(out.subarray(-2).toString(), 'hi');
      assert.equal(await socks(V1('198.51.100.9', 5555)), '', 'the header names a denied client');
      const h = await talk(z.addr('hp'), [
        Buffer.concat([
          V1('203.0.113.8', 4444),
          Buffer.from(`CONNECT 127.0.0.1:${ep} HTTP/1.1\r\nHost: 127.0.0.1:${ep}\r\n\r\nhey`),
        ]),
      ]);
      assert.equal(h, 'HTTP/1.1 200 Connection Established\r\n\r\nhey');
      // a peer not on `from` speaks SOCKS5 straight away
      const [sh, sp] = splitAddress(z.addr('s5'));
      const direct = connect({ host: sh, port: sp, localAddress: '127.0.0.2' });
      direct.on('error', () => {});
      direct.write(Buffer.from([5, 1, 0]));
      const [greeting] = (await once(direct, 'data')) as [Buffer];
      direct.destroy();
      assert.deepEqual([...greeting], [5, 0]);
      await until(() => z.access.length === 3, 'the three connections logged');
      const viaBalancer = z.access.filter((l) => l.client_ip !== '127.0.0.2');
      assert.deepEqual(viaBalancer.map((l) => [l.listener, l.client_ip, l.client_port]).sort(), [
        ['hp', '203.0.113.8', 4444],
        ['s5', '203.0.113.7', 5555],
      ]);
    } finally {
      await z.stop();
      await closeServer(echo);
    }
  });

  test('HAProxy send-proxy-v2 in front, HAProxy accept-proxy behind (send_proxy v1, and its http check)', async () => {
    // more[0]: HAProxy's accept-proxy frontend; more[1]: zipline's listener, HAProxy's backend
    const hap = await startHaproxy(
      (p, more) => `frontend fe
  mode tcp
  bind 127.0.0.1:${p}
  default_backend zl
backend zl
  mode tcp
  server z 127.0.0.1:${more[1]} send-proxy-v2
frontend behind
  mode http
  bind 127.0.0.1:${more[0]} accept-proxy
  http-request return status 200 content-type text/plain lf-string "src=%[src]:%[src_port]\\n"
`,
      2,
    );
    const z = await startRuntime(`
upstreams:
  hap:
    servers: [127.0.0.1:${hap.more[0]}]
    send_proxy: v1
    health_check: { type: http, interval: 100ms, timeout: 80ms, rise: 1 }
listeners:
  - { name: in, protocol: tcp, listen: 127.0.0.1:${hap.more[1]}, upstream: hap, proxy_protocol: { from: [127.0.0.1] } }
`);
    try {
      // accept-proxy refuses a connection without a header: passing checks prove they send one
      await checksPass(z, 'two passing http checks through accept-proxy');
      const r = await run('curl', ['-s', '-w', ' %{local_port}', `http://127.0.0.1:${hap.port}/`]);
      const m = /^src=127\.0\.0\.1:(\d+)\n (\d+)$/.exec(r.stdout);
      assert.ok(m, r.stdout);
      assert.equal(m[1], m[2], "HAProxy behind sees curl's own port, through HAProxy's v2 and zipline's v1");
      // its access line comes once both sockets have closed (HAProxy's own probe of its front port,
      // by startHaproxy, may have passed through zipline too: a line of its own)
      await until(() => z.access.some((l) => l.client_port === Number(m[2])), "curl's connection to end");
    } finally {
      await z.stop();
      hap.stop();
    }
  });

  test('send_proxy with tls: the header, then the handshake (HAProxy `accept-proxy ssl`), the http check too', async () => {
    const pem = join(tempDir('zl-pp-tls-'), 'a.pem');
    writeFileSync(
      pem,
      readFileSync(`${TLS_DIR}/a.crt`, 'latin1') + readFileSync(`${TLS_DIR}/a.key`, 'latin1'),
    );
    const hap = await startHaproxy(
      (p) => `frontend behind
  mode http
  bind 127.0.0.1:${p} accept-proxy ssl crt ${pem}
  http-request return status 200 content-type text/plain lf-string "src=%[src]:%[src_port] sni=%[ssl_fc_sni]\\n"
`,
    );
    const z = await startRuntime(`
upstreams:
  hap:
    servers: [127.0.0.1:${hap.port}]
    send_proxy: v2
    tls: { server_name: a.test, ca: ${TLS_DIR}/a.crt }
    health_check: { type: http, interval: 100ms, timeout: 80ms, rise: 1 }
listeners:
  - { name: in, protocol: tcp, listen: 127.0.0.1:0, upstream: hap }
`);
    try {
      await checksPass(z, 'two passing https checks through accept-proxy');
      const r = await run('curl', ['-s', '-w', ' %{local_port}', `http://${z.addr('in')}/`]);
      const m = /^src=127\.0\.0\.1:(\d+) sni=a\.test\n (\d+)$/.exec(r.stdout);
      assert.ok(m, r.stdout);
      assert.equal(m[1], m[2], "HAProxy sees curl's own port, from the header before the TLS handshake");
    } finally {
      await z.stop();
      hap.stop();
    }
  });

  test('a tunnel relay behind a balancer: the header names the agent; its TLS session runs on the native engine, a ClientHello read with the header included', async () => {
    const token = 'test-token-0123456789abcdef';
    const relay = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
tunnel:
  relay:
    listen: 127.0.0.1:0
    tls: auto
    state_dir: ${tempDir('zl-pp-relay-')}
    tokens: ["${token}"]
    allow: ["127.0.0.1:*"]
    proxy_protocol: { from: [127.0.0.1] }
`);
    const [rh, rp] = splitAddress(relay.rt.relay?.address() ?? '');
    // a balancer that names 198.51.100.N: `together` sends the header in one write with the
    // agent's first bytes (its ClientHello), else on its own first
    const balancer = (n: number, together: boolean) =>
      tcpServer((client) => {
        const up = connect(rp, rh);
        up.on('error', () => client.destroy());
        const header = V1(`198.51.100.${n}`, 4000 + n);
        if (!together) up.write(header);
        client.once('data', (first: Buffer) => {
          up.write(together ? Buffer.concat([header, first]) : first);
          client.pipe(up).pipe(client);
        });
        client.on('close', () => up.destroy());
      });
    const fronts = [await balancer(1, false), await balancer(2, true)];
    const echo = await tcpEcho();
    const agents: Awaited<ReturnType<typeof startRuntime>>[] = [];
    try {
      for (const [i, front] of fronts.entries()) {
        const agent = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
tunnel:
  agent:
    id: agent-${i + 1}
    relays: [{ address: "127.0.0.1:${port(front)}", fingerprint: "${relay.rt.relay?.fingerprint}" }]
    token: "${token}"
    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(echo)} }]
`);
        agents.push(agent);
        await until(() => agent.rt.agent?.links[0]?.state === 'up', `agent ${i + 1} up`);
        // a stream through the session: bytes both ways over the TLS the engine took up
        const c = await dial(agent.rt.agent?.addresses()['forwards[0]'] ?? '');
        c.end(`through agent ${i + 1}`);
        assert.equal((await readAll(c)).toString(), `through agent ${i + 1}`);
      }
      const sources = [...(relay.rt.relay?.sessions ?? [])]
        .map((rs) => rs.stats())
        .map((st) => [st.agent, st.source]);
      assert.deepEqual(sources.sort(), [
        ['agent-1', '198.51.100.1'],
        ['agent-2', '198.51.100.2'],
      ]);
      // the ClientHello read with the header goes to the native engine with the descriptor
      const engines = [...(relay.rt.relay?.sessions ?? [])].map((rs) => rs.stats().engine);
      assert.deepEqual(engines, engine.available ? ['native', 'native'] : ['js', 'js']);
    } finally {
      for (const a of agents) await a.stop();
      await relay.stop();
      for (const f of fronts) await closeServer(f);
      await closeServer(echo);
    }
  });

  describe('http, https, HTTP/2', () => {
    let origin: Origin;
    let z: Awaited<ReturnType<typeof startRuntime>>;
    before(async () => {
      origin = await startOrigin();
      z = await startRuntime(`
upstreams: { o: { servers: [${origin.address}] } }
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, upstream: o, proxy_protocol: { from: [127.0.0.1] } }
  - name: webs
    protocol: https
    listen: 127.0.0.1:0
    upstream: o
    proxy_protocol: { from: [127.0.0.1] }
    tls: { cert: ${TLS_DIR}/a.crt, key: ${TLS_DIR}/a.key }
`);
    });
    after(async () => {
      await z.stop();
      await origin.close();
    });

    const forwardedFor = (response: string): unknown => {
      const body = response.slice(response.indexOf('\r\n\r\n') + 4);
      return (JSON.parse(body) as { headers: Record<string, string> }).headers['x-forwarded-for'];
    };
    const request = Buffer.from('GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n', 'latin1');

    test("http/1.1: the header's address in X-Forwarded-For and the access log, with the request in the same read or later", async () => {
      assert.equal(
        forwardedFor(await talk(z.addr('web'), [Buffer.concat([V1('203.0.113.9', 1), request])], false)),
        '203.0.113.9',
      );
      assert.equal(
        forwardedFor(await talk(z.addr('web'), [V1('203.0.113.8', 2), request], false)),
        '203.0.113.8',
      );
      const curl = await run('curl', ['-s', '--haproxy-protocol', `http://${z.addr('web')}/y`]);
      assert.equal(JSON.parse(curl.stdout).headers['x-forwarded-for'], '127.0.0.1');
      const lines = z.access.filter((l) => l.listener === 'web');
      assert.deepEqual(lines.map((l) => [l.client_ip, l.status]).slice(0, 2), [
        ['203.0.113.9', 200],
        ['203.0.113.8', 200],
      ]);
    });

    test('https: the header, then the TLS handshake (its ClientHello in the same write); h2 by ALPN; h2c', async () => {
      const [host, port] = splitAddress(z.addr('webs'));
      // a TLS client over a stream whose first write is the header and the ClientHello together
      const raw = connect(port, host);
      let first = true;
      const carrier = new Duplex({
        write(chunk: Buffer, _enc, cb) {
          raw.write(first ? Buffer.concat([V1('203.0.113.10', 3), chunk]) : chunk, cb);
          first = false;
        },
        read() {},
        final(cb) {
          raw.end();
          cb();
        },
      });
      raw.on('data', (d: Buffer) => carrier.push(d));
      raw.on('end', () => carrier.push(null));
      const tls = connectTls({
        socket: carrier as unknown as Socket,
        servername: 'a.test',
        rejectUnauthorized: false,
      });
      await once(tls, 'secureConnect');
      tls.write(request); // not end(): a client FIN aborts the request (client_fin: abort)
      const got: Buffer[] = [];
      tls.on('data', (d: Buffer) => got.push(d));
      await once(tls, 'end');
      raw.destroy();
      assert.equal(forwardedFor(Buffer.concat(got).toString('latin1')), '203.0.113.10');

      const h2 = await run('curl', [
        '-sk',
        '--http2',
        '--haproxy-protocol',
        '-w',
        '\n%{http_version}',
        `https://${z.addr('webs')}/h2`,
      ]);
      assert.match(h2.stdout, /\n2$/);
      assert.equal(JSON.parse(h2.stdout.split('\n')[0] ?? '').headers['x-forwarded-for'], '127.0.0.1');

      const [wh, wp] = splitAddress(z.addr('web'));
      const session = connectH2(`http://${z.addr('web')}`, {
        createConnection: () => {
          const s = connect(wp, wh);
          s.write(V1('203.0.113.11', 4));
          return s;
        },
      });
      const stream = session.request({ ':path': '/h2c' });
      const body: Buffer[] = [];
      stream.on('data', (d: Buffer) => body.push(d));
      await once(stream, 'end');
      session.close();
      assert.equal(JSON.parse(Buffer.concat(body).toString()).headers['x-forwarded-for'], '203.0.113.11');
      const h2c = z.access.find((l) => l.path === '/h2c');
      assert.equal(h2c?.client_ip, '203.0.113.11');
      assert.equal(h2c?.http_version, '2');
    });
  });
});
