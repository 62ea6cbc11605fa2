/**
 * TLS to upstream servers (`upstreams.*.tls`). From the HTTP proxy, against real Node https origins:
 * SNI and certificate names (host names, IP addresses, `server_name`), trust (`ca`, the bundled
 * roots, `verify: false`), revocation (`crl`), client certificates, keep-alive and session resumption, large bodies
 * (never spliced natively: the socket carries TLS records), active `http` checks over TLS, and a
 * reload whose CA file cannot be read. From a tcp listener (nginx stream `proxy_ssl`): a TLS echo
 * server, half-close through TLS, a failed handshake, a client reset while the upstream is TLS.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { WebSocketServer } from 'ws';
import { loadConfigText } from '../../src/config/load.js';
import { webSocketEcho } from '../helpers/http.js';
import { closeServer, dial, readAll, until } from '../helpers/net.js';
import { tempDir } from '../helpers/temp.js';
import { ROOT, spawnZipline, startRuntime } from '../helpers/zipline.js';

const TLS = join(ROOT, 'test/fixtures/tls');
const A_CRT = join(TLS, 'a.crt');
const BIG = Buffer.alloc(1024 * 1024 + 7, 'zipline-');

interface Seen {
  sni: string | false;
  alpn: string | false;
  reused: boolean;
  client: string | null;
  host: string | undefined;
}

/** An https origin with a.test's certificate; `mtls` asks for a client certificate signed as b.test. */
async function origin(mtls = false): Promise<{ server: Server; port: number; handshakes: () => number }> {
  let handshakes = 0;
  const server = createServer(
    {
      cert: readFileSync(A_CRT),
      key: readFileSync(join(TLS, 'a.key')),
      ...(mtls ? { requestCert: true, rejectUnauthorized: true, ca: readFileSync(join(TLS, 'b.crt')) } : {}),
    },
    (req, res) => {
      const s = req.socket as TLSSocket;
      if (req.url === '/big') {
        res.end(BIG);
        return;
      }
      if (req.method === 'POST') {
        const hash = createHash('sha256');
        req.on('data', (c: Buffer) => hash.update(c));
        req.on('end', () => res.end(hash.digest('hex')));
        return;
      }
      const peer = s.getPeerCertificate() as { subject?: { CN?: string } };
      const seen: Seen = {
        sni: (s as unknown as { servername: string | false }).servername,
        alpn: s.alpnProtocol ?? false,
        reused: s.isSessionReused(),
        client: peer?.subject?.CN ?? null,
        host: req.headers.host,
      };
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(seen));
    },
  );
  server.on('secureConnection', () => handshakes++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, handshakes: () => handshakes };
}

/** Names the tests give servers resolve to loopback. */
const lookup = (_host: string, cb: (err: Error | null, addresses: string[]) => void): void =>
  cb(null, ['127.0.0.1']);

describe('TLS to upstream servers', () => {
  let plain: Awaited<ReturnType<typeof origin>>;
  let mutual: Awaited<ReturnType<typeof origin>>;
  before(async () => {
    plain = await origin();
    mutual = await origin(true);
  });
  after(async () => {
    await closeServer(plain.server);
    await closeServer(mutual.server);
  });

  function config(upstreams: Record<string, string>, extra = ''): string {
    const names = Object.keys(upstreams);
    return `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 1s
upstreams:
${names.map((n) => `  ${n}: ${upstreams[n]}`).join('\n')}
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes:
${names.map((n) => `      - { match: { path_prefix: /${n} }, upstream: ${n} }`).join('\n')}
${extra}`;
  }

  test('a server named by host: SNI and the certificate checked by that name, ALPN http/1.1, keep-alive, resumed sessions', async () => {
    const z = await startRuntime(
      config({
        named: `{ servers: [a.test:${plain.port}], tls: { ca: ${A_CRT} } }`,
        fresh: `{ servers: [a.test:${plain.port}], tls: { ca: ${A_CRT} }, keepalive: { max_requests: 1 } }`,
      }),
      { lookup },
    );
    try {
      const base = `http://${z.addr('web')}`;
      const before = plain.handshakes();
      const kept: Seen[] = [];
      for (let i = 0; i < 5; i++) kept.push((await (await fetch(`${base}/named`)).json()) as Seen);
      assert.deepEqual(kept[0], {
        sni: 'a.test',
        alpn: 'http/1.1',
        reused: false,
        client: null,
        host: z.addr('web'), // the client's, as always
      });
      assert.equal(plain.handshakes() - before, 1, 'five requests, one TLS connection');
      // one request per connection: the later handshakes resume the first one's session
      const fresh: Seen[] = [];
      for (let i = 0; i < 4; i++) fresh.push((await (await fetch(`${base}/fresh`)).json()) as Seen);
      assert.ok(
        fresh.slice(1).some((s) => s.reused),
        `resumed: ${fresh.map((s) => s.reused).join(' ')}`,
      );
    } finally {
      await z.stop();
    }
  });

  test("an origin that wants its own name as Host gets it from a route rule (Host stays the client's otherwise)", async () => {
    const z = await startRuntime(
      `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 1s
upstreams:
  saas: { servers: [a.test:${plain.port}], tls: { ca: ${A_CRT} } }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes:
      - match: { path_prefix: / }
        upstream: saas
        headers: { request: { set: { Host: a.test } } }
`,
      { lookup },
    );
    try {
      const seen = (await (await fetch(`http://${z.addr('web')}/x`)).json()) as Seen;
      assert.equal(seen.host, 'a.test');
      assert.equal(seen.sni, 'a.test');
    } finally {
      await z.stop();
    }
  });

  test('trust and names: a certificate not naming the IP, another server_name, an unknown CA are 502 ZL_UPSTREAM_TLS; server_name and verify: false pass', async () => {
    const p = plain.port;
    const z = await startRuntime(
      config({
        ip: `{ servers: [127.0.0.1:${p}], tls: { ca: ${A_CRT} } }`,
        sni: `{ servers: [127.0.0.1:${p}], tls: { ca: ${A_CRT}, server_name: a.test } }`,
        wrong: `{ servers: [127.0.0.1:${p}], tls: { ca: ${A_CRT}, server_name: b.test } }`,
        roots: `{ servers: [127.0.0.1:${p}], tls: true }`,
        unverified: `{ servers: [127.0.0.1:${p}], tls: { verify: false } }`,
      }),
    );
    try {
      const base = `http://${z.addr('web')}`;
      const outcome = async (path: string): Promise<string> => {
        const r = await fetch(`${base}${path}`);
        await r.arrayBuffer();
        return `${r.status} ${r.headers.get('x-zipline-error') ?? ''}`.trim();
      };
      assert.equal(await outcome('/ip'), '502 ZL_UPSTREAM_TLS');
      assert.equal(await outcome('/sni'), '200');
      assert.equal(await outcome('/wrong'), '502 ZL_UPSTREAM_TLS');
      assert.equal(await outcome('/roots'), '502 ZL_UPSTREAM_TLS');
      assert.equal(await outcome('/unverified'), '200');
      const failed = z.access.filter((l) => l.error === 'ZL_UPSTREAM_TLS').length;
      assert.equal(failed, 3, 'each failure in the access log');
    } finally {
      await z.stop();
    }
  });

  test('tls.crl: a server whose certificate the CA revoked fails its handshake (502 ZL_UPSTREAM_TLS); one not revoked passes', async () => {
    // test/fixtures/tls: ca.crt issued good.crt and revoked.crt, and ca.crl revokes the second
    const serve = async (name: string): Promise<Server> => {
      const server = createServer(
        { cert: readFileSync(join(TLS, `${name}.crt`)), key: readFileSync(join(TLS, `${name}.key`)) },
        (_req, res) => res.end(name),
      );
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      return server;
    };
    const [good, revoked] = await Promise.all([serve('good'), serve('revoked')]);
    const at = (s: Server): number => (s.address() as AddressInfo).port;
    const ca = join(TLS, 'ca.crt');
    const crl = join(TLS, 'ca.crl');
    const z = await startRuntime(
      config({
        good: `{ servers: [127.0.0.1:${at(good)}], tls: { ca: ${ca}, crl: ${crl}, server_name: good.test } }`,
        revoked: `{ servers: [127.0.0.1:${at(revoked)}], tls: { ca: ${ca}, crl: ${crl}, server_name: revoked.test } }`,
        unchecked: `{ servers: [127.0.0.1:${at(revoked)}], tls: { ca: ${ca}, server_name: revoked.test } }`,
      }),
    );
    try {
      const base = `http://${z.addr('web')}`;
      const outcome = async (path: string): Promise<string> => {
        const r = await fetch(`${base}${path}`);
        const body = await r.text();
        return `${r.status} ${r.headers.get('x-zipline-error') ?? body}`;
      };
      assert.equal(await outcome('/good'), '200 good');
      assert.equal(await outcome('/revoked'), '502 ZL_UPSTREAM_TLS');
      assert.equal(await outcome('/unchecked'), '200 revoked', 'without the CRL the same server passes');
    } finally {
      await z.stop();
      await Promise.all([closeServer(good), closeServer(revoked)]);
    }
  });

  test('a server that asks for a client certificate gets tls.cert; without one the handshake fails (502)', async () => {
    const m = mutual.port;
    const z = await startRuntime(
      config({
        withcert: `{ servers: [a.test:${m}], tls: { ca: ${A_CRT}, cert: ${TLS}/b.crt, key: ${TLS}/b.key } }`,
        without: `{ servers: [a.test:${m}], tls: { ca: ${A_CRT} } }`,
      }),
      { lookup },
    );
    try {
      const base = `http://${z.addr('web')}`;
      const ok = await fetch(`${base}/withcert`);
      assert.equal(ok.status, 200);
      assert.equal(((await ok.json()) as Seen).client, 'b.test');
      const refused = await fetch(`${base}/without`);
      await refused.arrayBuffer();
      assert.equal(refused.status, 502);
      assert.equal(refused.headers.get('x-zipline-error'), 'ZL_UPSTREAM_TLS');
    } finally {
      await z.stop();
    }
  });

  test('1 MiB bodies both ways arrive whole (the response is not handed to the native splice)', async () => {
    const z = await startRuntime(
      config({ big: `{ servers: [a.test:${plain.port}], tls: { ca: ${A_CRT} } }` }),
      {
        lookup,
      },
    );
    try {
      const base = `http://${z.addr('web')}`;
      const down = Buffer.from(await (await fetch(`${base}/big`)).arrayBuffer());
      assert.equal(down.length, BIG.length);
      assert.ok(down.equals(BIG));
      const up = await fetch(`${base}/big/up`, { method: 'POST', body: BIG });
      assert.equal(await up.text(), createHash('sha256').update(BIG).digest('hex'));
    } finally {
      await z.stop();
    }
  });

  test('a WebSocket to a wss:// origin: 101, messages both ways, both connections torn down', async () => {
    const server = createServer({ cert: readFileSync(A_CRT), key: readFileSync(join(TLS, 'a.key')) });
    const wss = new WebSocketServer({ server });
    wss.on('connection', (ws) => ws.on('message', (m, binary) => ws.send(m, { binary })));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    const z = await startRuntime(config({ chat: `{ servers: [a.test:${port}], tls: { ca: ${A_CRT} } }` }), {
      lookup,
    });
    try {
      const got = await webSocketEcho(`ws://${z.addr('web')}/chat`, 50, 1000);
      assert.equal(got[49], `message 49 ${'x'.repeat(49_000)}`);
      assert.equal(z.access[0]?.status, 101);
      await until(() => z.rt.activeCount() === 0 && wss.clients.size === 0, 'both sides torn down');
    } finally {
      await z.stop();
      wss.close();
      await closeServer(server);
    }
  });

  test('an http health check speaks the upstream TLS: up with the right CA, out of rotation with another', async () => {
    const check =
      'health_check: { type: http, path: /hc, interval: 200ms, timeout: 150ms, rise: 1, fall: 1 }';
    const z = await startRuntime(
      config({
        good: `{ servers: [a.test:${plain.port}], tls: { ca: ${A_CRT} }, ${check} }`,
        bad: `{ servers: [a.test:${plain.port}], tls: { ca: ${TLS}/b.crt }, ${check} }`,
      }),
      { lookup },
    );
    try {
      const server = (u: string) => z.rt.upstreams.get(u)?.endpoints[0];
      await until(() => server('bad')?.activeHealthy === false, 'the bad-CA server is out of rotation');
      assert.equal(server('good')?.activeHealthy, true);
      assert.equal(server('good')?.lastCheckError, null);
    } finally {
      await z.stop();
    }
  });

  test("the reason a handshake failed is in zipline's log (OpenSSL's code), once per 10 s per upstream", async () => {
    const z = await spawnZipline(`
admin: { listen: 127.0.0.1:0 }
upstreams:
  app: { servers: [127.0.0.1:${plain.port}], tls: { server_name: a.test, ca: ${TLS}/b.crt } }
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, upstream: app }
`);
    try {
      const url = `http://${await z.listener('web')}/x`;
      for (let i = 0; i < 3; i++) {
        const r = await fetch(url);
        await r.arrayBuffer();
        assert.equal(r.status, 502);
      }
      const line = await z.waitForLog(/TLS with the server failed/);
      assert.match(line, /"code":"ZL_UPSTREAM_TLS"/);
      assert.match(line, /"reason":"DEPTH_ZERO_SELF_SIGNED_CERT"/);
      assert.equal([...z.stdout, ...z.stderr].filter((l) => /TLS with the server failed/.test(l)).length, 1);
    } finally {
      await z.stop();
    }
  });

  test('a CA file renewed in place (same path, new bytes) is read again at reload; an unchanged one is not re-applied', async () => {
    const ca = join(tempDir('zl-ca-'), 'ca.pem');
    copyFileSync(join(TLS, 'b.crt'), ca); // not the CA of a.test's certificate
    const text = config({ app: `{ servers: [a.test:${plain.port}], tls: { ca: ${ca} } }` });
    const cfg = loadConfigText(text, {});
    assert.ok(cfg.ok);
    const z = await startRuntime(text, { lookup });
    try {
      const status = async (): Promise<string> => {
        const r = await fetch(`http://${z.addr('web')}/app`);
        await r.arrayBuffer();
        return `${r.status} ${r.headers.get('x-zipline-error') ?? ''}`.trim();
      };
      assert.equal(await status(), '502 ZL_UPSTREAM_TLS');
      assert.deepEqual(
        (await z.rt.reload(cfg.config)).upstreams.changed,
        [],
        'nothing renewed: nothing applied',
      );
      copyFileSync(A_CRT, ca);
      const report = await z.rt.reload(cfg.config);
      assert.equal(report.result, 'applied', report.errors.join('; '));
      assert.deepEqual(report.upstreams.changed, ['app']);
      assert.equal(await status(), '200');
    } finally {
      await z.stop();
    }
  });

  test('a reload whose CA file cannot be read is partial: the upstream keeps its previous TLS settings', async () => {
    const yamlWith = (ca: string) =>
      config({ app: `{ servers: [a.test:${plain.port}], tls: { ca: ${ca} } }` });
    const z = await startRuntime(yamlWith(A_CRT), { lookup });
    try {
      const next = loadConfigText(yamlWith('/nonexistent/ca.pem'), {});
      assert.ok(next.ok);
      const report = await z.rt.reload(next.config);
      assert.equal(report.result, 'partial');
      assert.match(
        report.errors.join('\n'),
        /upstream app: cannot read TLS CA file \/nonexistent\/ca\.pem: ENOENT; its previous settings stay/,
      );
      assert.equal((await fetch(`http://${z.addr('web')}/app`)).status, 200);
    } finally {
      await z.stop();
    }
  });
});

describe('TLS to upstream servers from a tcp listener', () => {
  /**
   * A TLS echo server that answers a FIN with what it got, then its own FIN (half-close). `close`
   * also destroys connections whose handshake failed (half-open ones would keep it open).
   */
  async function tlsEcho(): Promise<{
    server: ReturnType<typeof createTlsServer>;
    port: number;
    sni: string[];
    close(): Promise<void>;
  }> {
    const sni: string[] = [];
    const sockets = new Set<Socket>();
    const server = createTlsServer(
      { cert: readFileSync(A_CRT), key: readFileSync(join(TLS, 'a.key')), allowHalfOpen: true },
      (s) => {
        sni.push(String((s as unknown as { servername: string | false }).servername));
        const got: Buffer[] = [];
        s.on('data', (c: Buffer) => got.push(c));
        s.on('end', () => s.end(Buffer.concat([Buffer.from('echo:'), ...got])));
        s.on('error', () => {});
      },
    );
    server.on('connection', (s: Socket) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const close = (): Promise<void> => {
      for (const s of sockets) s.destroy();
      return closeServer(server);
    };
    return { server, port: (server.address() as AddressInfo).port, sni, close };
  }

  const tcpConfig = (port: number, tls: string) => `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 1s
upstreams:
  app: { servers: [a.test:${port}], tls: ${tls} }
listeners:
  - { name: t, protocol: tcp, listen: 127.0.0.1:0, upstream: app }
`;

  test("plain TCP in, TLS out: bytes both ways, SNI, the client's FIN passed on and the answer after it", async () => {
    const echo = await tlsEcho();
    const z = await startRuntime(tcpConfig(echo.port, `{ ca: ${A_CRT} }`), { lookup });
    try {
      for (let i = 0; i < 3; i++) {
        const c = await dial(z.addr('t'));
        c.end(`hello ${i}`);
        assert.equal((await readAll(c)).toString(), `echo:hello ${i}`);
      }
      assert.deepEqual(echo.sni, ['a.test', 'a.test', 'a.test']);
      assert.ok(
        z.access.every((l) => l.error === null && l.data_path === 'js'),
        JSON.stringify(z.access),
      );
    } finally {
      await z.stop();
      await echo.close();
    }
  });

  test('a certificate that is not trusted: the client is closed, ZL_UPSTREAM_TLS logged and counted', async () => {
    const echo = await tlsEcho();
    const z = await startRuntime(tcpConfig(echo.port, `{ ca: ${TLS}/b.crt }`), { lookup });
    try {
      const c = await dial(z.addr('t'));
      c.end('x');
      // closed as any failed dial is: unread bytes make it a reset
      const got = await readAll(c).catch(() => Buffer.alloc(0));
      assert.equal(got.length, 0);
      await until(() => z.access.length === 1, 'one access line');
      assert.equal(z.access[0]?.error, 'ZL_UPSTREAM_TLS');
      assert.equal(z.access[0]?.attempts, 3, 'a failed handshake is retried as a failed connect');
    } finally {
      await z.stop();
      await echo.close();
    }
  });

  test('a client that resets while the upstream is TLS: the upstream connection is closed, the next client served', async () => {
    const echo = await tlsEcho();
    let closed = 0;
    echo.server.on('secureConnection', (s) => s.on('close', () => closed++));
    const z = await startRuntime(tcpConfig(echo.port, `{ ca: ${A_CRT} }`), { lookup });
    try {
      const c = await dial(z.addr('t'));
      c.write('half a message');
      await until(() => echo.sni.length === 1, 'the upstream TLS connection is up');
      c.resetAndDestroy();
      await until(() => closed === 1, 'the upstream side closed');
      const next = await dial(z.addr('t'));
      next.end('again');
      assert.equal((await readAll(next)).toString(), 'echo:again');
    } finally {
      await z.stop();
      await echo.close();
    }
  });
});
