/** The HTTP reverse proxy on real loopback sockets: forwarding semantics, routing, hostile input. */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { ClientHttp2Stream, IncomingHttpHeaders } from 'node:http2';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { loadConfigText } from '../../src/config/load.js';
import { nativePump } from '../../src/l4/native-pump.js';
import { metrics } from '../../src/metrics/catalog.js';
import { get, KeepAliveClient, parseResponse, rawRequest, testPeers } from '../helpers/http.js';
import { dial, endOf, port, RESETS_TOLD, splitAddress, until } from '../helpers/net.js';
import { ROOT, startRuntime } from '../helpers/zipline.js';

const peers = testPeers();
after(() => peers.cleanup());
const origin = peers.origin;
const raw = peers.raw;
const TLS = join(ROOT, 'test/fixtures/tls');

/** An origin that answers any request with `head`, then `chunk` for as long as it is taken. */
const endlessAfter = (head: string, chunk: Buffer) =>
  raw((s) => {
    s.on('error', () => {});
    s.once('data', () => {
      s.write(head);
      const pump = (): void => {
        while (!s.destroyed && s.write(chunk));
        if (!s.destroyed) s.once('drain', pump);
      };
      pump();
    });
  });

/** Counts what `socket` receives (once it reads); errors are expected (resets). */
function bytesReceived(socket: Socket): () => number {
  let n = 0;
  socket.on('data', (d: Buffer) => {
    n += d.length;
  });
  socket.on('error', () => {});
  return () => n;
}

/** The listener has a client connection whose FIN it has read. */
function clientSideClosed(l: { connections: Set<unknown> }): boolean {
  return [...l.connections].some((c) => (c as { socket: { readableEnded: boolean } }).socket.readableEnded);
}

/**
 * Writes 64 KiB chunks into an HTTP/2 request as fast as it takes them: `total` bytes, then
 * END_STREAM, or without end. Returns what was written so far.
 */
function upload(req: ClientHttp2Stream, total = Number.POSITIVE_INFINITY): () => number {
  const chunk = Buffer.alloc(64 * 1024);
  let sent = 0;
  const pump = (): void => {
    while (sent < total && !req.destroyed) {
      sent += chunk.length;
      if (!req.write(chunk)) return void req.once('drain', pump);
    }
    if (!req.destroyed) req.end();
  };
  pump();
  return () => sent;
}

function config(servers: string[], listenerExtra = '', upstreamExtra = ''): string {
  return `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 2s
upstreams:
  app:
    servers: [${servers.join(', ')}]
    retry: { attempts: 2, backoff: { base: 5ms, max: 20ms } }
${upstreamExtra}
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    upstream: app
${listenerExtra}
`;
}

/** Writes `bytes`, half-closes, and reads until the proxy closes. */
const halfClose = (address: string, bytes: string): Promise<string> =>
  new Promise((resolve, reject) => {
    const [host, p] = splitAddress(address);
    const s = connect(p, host);
    let text = '';
    s.on('data', (c: Buffer) => {
      text += c.toString('latin1');
    });
    s.on('error', reject);
    s.on('close', () => resolve(text));
    s.end(bytes);
  });

type Echo = { method: string; url: string; headers: Record<string, string>; body: number };

/** One request on a new connection; resolves at the first complete response or at close. */
async function one(address: string, request: string | Buffer, method = 'GET') {
  const r = await rawRequest(address, request, 5000, (d) => {
    const p = parseResponse(d, method);
    // a response that closes the connection is awaited until the close, to observe it
    return p !== null && p.resp.headers.get('connection')?.[0] !== 'close';
  });
  const parsed = parseResponse(r.data, method);
  assert.ok(parsed, `no complete response in: ${r.data.toString('latin1').slice(0, 300)}`);
  return { ...parsed.resp, closed: r.closed, raw: r.data.toString('latin1') };
}

describe('forwarding semantics', () => {
  test('GET, POST with Content-Length and chunked, HEAD; bodies and methods arrive intact', async () => {
    const o = await origin();
    const z = await startRuntime(config([o.address]));
    try {
      const c = await KeepAliveClient.open(z.addr('web'));
      const g = await c.send(get('/a?b=1'));
      assert.equal(g.status, 200);
      const e = JSON.parse(g.body.toString()) as Echo;
      assert.equal(e.url, '/a?b=1');
      const p = await c.send(
        'POST /p HTTP/1.1\r\nHost: x.test\r\nuser-AGENT: probe/1.0 "q"\r\nReferer: https://r.test/\r\nContent-Length: 5\r\n\r\nhello',
      );
      const pe = JSON.parse(p.body.toString()) as Echo;
      assert.equal(pe.body, 5);
      // end-to-end fields zipline also reads (for the access line) still reach the origin
      assert.equal(pe.headers['user-agent'], 'probe/1.0 "q"');
      assert.equal(pe.headers.referer, 'https://r.test/');
      const ch = await c.send(
        'PUT /c HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n',
      );
      const ce = JSON.parse(ch.body.toString()) as Echo;
      assert.equal(ce.method, 'PUT');
      assert.equal(ce.body, 7);
      assert.equal(ce.headers['transfer-encoding'], 'chunked');
      const h = await c.send(get('/h').replace('GET', 'HEAD'), 'HEAD');
      assert.equal(h.status, 200);
      assert.equal(h.body.length, 0);
      // all on one client connection, served by one pooled upstream connection
      assert.equal(o.connections, 1);
      c.close();
      assert.equal(z.access.length, 4);
      const line = z.access[1] as Record<string, unknown>;
      for (const k of [
        'time',
        'listener',
        'client_ip',
        'method',
        'path',
        'status',
        'upstream',
        'upstream_addr',
        'attempts',
        'response_time',
        'bytes_in',
        'bytes_out',
        'error',
      ]) {
        assert.ok(k in line, `access log has ${k}`);
      }
      assert.equal(line.method, 'POST');
      assert.equal(line.http_version, '1.1');
      assert.equal(line.status, 200);
      assert.equal(line.bytes_in, 5);
      // seconds to the microsecond (a difference of performance.now() readings, divided, printed
      // digits of float noise: 0.003574637000000621)
      assert.match(String(line.response_time), /^0\.\d{1,6}$/);
      // nginx's combined format has them: $http_user_agent, $http_referer
      assert.equal(line.user_agent, 'probe/1.0 "q"');
      assert.equal(line.referer, 'https://r.test/');
      assert.equal(z.access[0]?.user_agent, null, 'no User-Agent: null');
      assert.equal(z.access[0]?.referer, null);
    } finally {
      await z.stop();
    }
  });

  test('204 and 304 carry no body; chunked responses pass through; Set-Cookie repeats and name case are kept', async () => {
    const o = await origin((req, res) => {
      if (req.url === '/204') {
        res.statusCode = 204;
        res.end();
      } else if (req.url === '/304') {
        res.statusCode = 304;
        res.end();
      } else {
        res.setHeader('Set-Cookie', ['a=1', 'b=2']);
        res.setHeader('X-MiXeD-Case', 'yes');
        res.write('part1-');
        res.end('part2');
      }
    });
    const z = await startRuntime(config([o.address]));
    try {
      const c = await KeepAliveClient.open(z.addr('web'));
      assert.equal((await c.send(get('/204'))).status, 204);
      assert.equal((await c.send(get('/304'))).status, 304);
      const r = await c.send(get('/cookies'));
      assert.equal(r.body.toString(), 'part1-part2');
      assert.deepEqual(r.headers.get('set-cookie'), ['a=1', 'b=2']);
      assert.match(r.head, /\r\nX-MiXeD-Case: yes\r\n/);
      assert.equal(r.headers.get('transfer-encoding')?.[0], 'chunked');
      c.close();
    } finally {
      await z.stop();
    }
  });

  test('a 204 or 1xx from the origin reaches the client without the Content-Length it should not have sent; a 103 keeps its Link over HTTP/2 too', async () => {
    const bad = await raw((s) => {
      s.on('data', (d: Buffer) => {
        const path = d.toString('latin1').split(' ')[1];
        if (path === '/204') s.write('HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n');
        else
          s.write(
            'HTTP/1.1 103 Early Hints\r\nContent-Length: 7\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
          );
      });
    });
    const z = await startRuntime(config([`127.0.0.1:${port(bad)}`]));
    try {
      const r = await rawRequest(z.addr('web'), get('/204', 'x.test', 'Connection: close\r\n'));
      assert.match(
        r.data.toString('latin1'),
        /^HTTP\/1\.1 204 No Content\r\nX-A: 1\r\nConnection: close\r\n\r\n$/,
      );
      const hints = await rawRequest(z.addr('web'), get('/103', 'x.test', 'Connection: close\r\n'));
      assert.match(
        hints.data.toString('latin1'),
        /^HTTP\/1\.1 103 Early Hints\r\nLink: <\/a>\r\n\r\nHTTP\/1\.1 200 OK\r\nContent-Length: 2\r\n/,
      );
      // HTTP/2 (h2c): the 103 is a HEADERS frame of its own, with its Link field
      const h2 = await import('node:http2');
      const session = h2.connect(`http://${z.addr('web')}`);
      try {
        const req = session.request({ ':path': '/103' });
        const [[interim], [final]] = await Promise.all([once(req, 'headers'), once(req, 'response')]);
        req.resume();
        assert.equal(interim[':status'], 103);
        assert.equal(interim.link, '</a>');
        assert.equal(interim['content-length'], undefined);
        assert.equal(final[':status'], 200);
      } finally {
        session.close();
      }
    } finally {
      await z.stop();
    }
  });

  test('a response whose Connection names its framing keeps it: two keep-alive responses stay two', async () => {
    const bad = await raw((s) => {
      s.on('data', (d: Buffer) => {
        for (let i = d.toString('latin1').split('\r\n\r\n').length - 1; i > 0; i--)
          s.write(
            'HTTP/1.1 200 OK\r\nConnection: content-length, transfer-encoding, x-hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok',
          );
      });
    });
    const z = await startRuntime(config([`127.0.0.1:${port(bad)}`]));
    try {
      // two pipelined requests, the second one closing: both answers come back framed, and the
      // named X-Hop is still dropped
      const r = await rawRequest(z.addr('web'), get('/a') + get('/b', 'x.test', 'Connection: close\r\n'));
      const text = r.data.toString('latin1');
      assert.equal(text.match(/\r\nContent-Length: 2\r\n/g)?.length, 2, text);
      assert.doesNotMatch(text, /X-Hop/i);
    } finally {
      await z.stop();
    }
  });

  test('an origin that sends 1xx heads without end gets a 502 after 64 KiB of them, not an endless relay', async () => {
    const hint = 'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n';
    const batch = Buffer.from(hint.repeat(100), 'latin1');
    let originClosed = false;
    const flood = await raw((s) => {
      s.once('data', () => {
        const pump = (): void => {
          while (!s.destroyed && s.write(batch)) {}
        };
        s.on('drain', pump);
        pump();
      });
      s.on('close', () => {
        originClosed = true;
      });
    });
    const badResponses = async (): Promise<number> =>
      (await metrics.httpErrors.get()).values.find(
        (v) => v.labels.listener === 'web' && v.labels.code === 'ZL_UPSTREAM_BAD_RESPONSE',
      )?.value ?? 0;
    const before = await badResponses();
    // before the bound: hints relayed until the response_header timeout (2 s here, 504), and held
    // in memory by a client that does not read
    const z = await startRuntime(
      config([`127.0.0.1:${port(flood)}`], '', '    timeouts: { response_header: 2s }'),
    );
    try {
      const r = await rawRequest(z.addr('web'), get('/', 'x.test', 'Connection: close\r\n'), 10_000);
      const text = r.data.toString('latin1');
      const hints = text.split('HTTP/1.1 103 ').length - 1;
      const final = text.slice(text.lastIndexOf('HTTP/1.1 '));
      assert.match(final, /^HTTP\/1\.1 502 Bad Gateway\r\n/);
      assert.match(final, /\r\nx-zipline-error: ZL_UPSTREAM_BAD_RESPONSE\r\n/i);
      assert.ok(r.closed, 'the client connection is closed after the 502');
      assert.ok(
        hints > 100 && hints * hint.length <= 64 * 1024,
        `${hints} hints relayed (${hints * hint.length} bytes): up to 64 KiB of them`,
      );
      await until(() => originClosed, 'the origin connection closed');
      assert.equal((await badResponses()) - before, 1);
    } finally {
      await z.stop();
    }
  });

  test('hop-by-hop fields are removed (also those named in Connection); Host is preserved', async () => {
    const o = await origin();
    const z = await startRuntime(config([o.address]));
    try {
      const r = await one(
        z.addr('web'),
        get(
          '/',
          'Example.COM:8080',
          // `host` as a Connection option does not drop Host (an HTTP/1.1 request must have one)
          'Connection: keep-alive, X-Secret, Host\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: x\r\nX-Kept: 2\r\nConnection: close\r\n',
        ),
      );
      const e = JSON.parse(r.body.toString()) as Echo;
      assert.equal(e.headers.host, 'Example.COM:8080');
      assert.equal(e.headers['x-secret'], undefined);
      assert.equal(e.headers['keep-alive'], undefined);
      assert.equal(e.headers.te, undefined);
      assert.equal(e.headers['proxy-connection'], undefined);
      assert.equal(e.headers['x-kept'], '2');
      assert.equal(r.headers.get('connection')?.[0], 'close');
      assert.ok(r.closed, 'Connection: close honoured');
    } finally {
      await z.stop();
    }
  });

  test('X-Forwarded-* and X-Real-IP: replaced for untrusted clients, appended for trusted proxies; X-Request-Id kept or made', async () => {
    const o = await origin();
    const spoof =
      'X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Request-Id: abc-123\r\n';
    const z1 = await startRuntime(config([o.address]));
    try {
      const e = JSON.parse((await one(z1.addr('web'), get('/', 'h.test', spoof))).body.toString()) as Echo;
      assert.equal(e.headers['x-forwarded-for'], '127.0.0.1');
      assert.equal(e.headers['x-real-ip'], '127.0.0.1');
      assert.equal(e.headers['x-forwarded-proto'], 'http');
      assert.equal(e.headers['x-forwarded-host'], 'h.test');
      assert.equal(e.headers['x-request-id'], 'abc-123');
      const e2 = JSON.parse((await one(z1.addr('web'), get('/'))).body.toString()) as Echo;
      assert.match(e2.headers['x-request-id'] ?? '', /^[0-9a-f]{32}$/);
    } finally {
      await z1.stop();
    }
    const z2 = await startRuntime(config([o.address], '    trusted_proxies: [127.0.0.0/8]'));
    try {
      const e = JSON.parse((await one(z2.addr('web'), get('/', 'h.test', spoof))).body.toString()) as Echo;
      assert.equal(e.headers['x-forwarded-for'], '6.6.6.6, 127.0.0.1');
      assert.equal(e.headers['x-real-ip'], '6.6.6.6');
      assert.equal(e.headers['x-forwarded-proto'], 'https');
    } finally {
      await z2.stop();
    }
  });

  test('Expect: 100-continue is answered once the upstream is ready, then the body flows', async () => {
    const o = await origin();
    const z = await startRuntime(config([o.address]));
    try {
      const c = await KeepAliveClient.open(z.addr('web'));
      const interim = await c.send(
        'POST /e HTTP/1.1\r\nHost: x.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n',
      );
      assert.equal(interim.status, 100);
      const final = await c.send('body');
      assert.equal(final.status, 200);
      const e = JSON.parse(final.body.toString()) as Echo;
      assert.equal(e.body, 4);
      assert.equal(e.headers.expect, undefined);
      c.close();
    } finally {
      await z.stop();
    }
  });

  test('pipelined requests are answered in order', async () => {
    const o = await origin();
    const z = await startRuntime(config([o.address]));
    try {
      const r = await rawRequest(
        z.addr('web'),
        `${get('/1')}${get('/2')}${get('/3', 'x.test', 'Connection: close\r\n')}`,
      );
      let buf = r.data;
      const urls: string[] = [];
      for (let i = 0; i < 3; i++) {
        const p = parseResponse(buf);
        assert.ok(p);
        urls.push((JSON.parse(p.resp.body.toString()) as Echo).url);
        buf = p.rest;
      }
      assert.deepEqual(urls, ['/1', '/2', '/3']);
      assert.ok(r.closed);
    } finally {
      await z.stop();
    }
  });

  test('a client that pipelines without reading: zipline stops answering and reading (both bounded), then answers every request once it reads', async () => {
    const body = 'x'.repeat(2048);
    const o = await origin((_req, res) => res.end(body));
    const z = await startRuntime(config([o.address]));
    try {
      const N = 20_000; // 580 KB of requests; their 2 KiB responses (40 MB) far beyond socket buffers
      const [host, p] = splitAddress(z.addr('web'));
      const client = connect(p, host);
      client.pause();
      client.write(`${get('/', 'x.test')}`.repeat(N));
      const l = z.rt.listeners.get('web') as unknown as {
        connections: Set<{ state(): string; ahead: { size: number } }>;
        settings: { maxHeaderBytes: number };
      };
      // the responses so far fill the socket buffers; the next request waits for the client to
      // read them (before: every request answered into memory, each read making room for more)
      await until(
        () => [...l.connections].some((c) => c.state() === 'sending'),
        'waiting for the client to read',
      );
      const [conn] = [...l.connections];
      // what is read ahead and kept stays within its bound (before: 16 KiB more per request served)
      const kept = conn?.ahead.size ?? 0;
      assert.ok(kept <= l.settings.maxHeaderBytes + 64 * 1024 + 16 * 1024, `${kept} bytes kept`);
      const web = ((await z.rt.stats()).listeners as Record<string, { connections: Record<string, number> }>)
        .web;
      assert.equal(web?.connections.sending, 1, '/stats counts it as sending');
      // once the client reads, every request is answered, in order, none lost
      let got = 0;
      let rest: Buffer = Buffer.alloc(0);
      client.on('data', (d: Buffer) => {
        rest = rest.length === 0 ? d : Buffer.concat([rest, d]);
        for (let r = parseResponse(rest); r !== null; r = parseResponse(rest)) {
          assert.equal(r.resp.status, 200);
          assert.equal(r.resp.body.length, body.length);
          got++;
          rest = r.rest;
        }
      });
      client.resume();
      await until(() => got === N, `${N} responses`, 30_000);
      client.destroy();
    } finally {
      await z.stop();
    }
  });
});

describe('routing', () => {
  test('exact host, wildcard host, longest prefix, strip_prefix, header rules, 404 with a coded body', async () => {
    const a = await origin((req, res) =>
      res.end(`a ${req.url} ${req.headers['x-env'] ?? ''} ${req.headers['x-debug'] ?? ''}`),
    );
    const b = await origin((req, res) => {
      res.setHeader('Server', 'secret/1.0');
      res.end(`b ${req.url}`);
    });
    const yaml = `
admin: { listen: 127.0.0.1:0 }
upstreams:
  a: { servers: [${a.address}] }
  b: { servers: [${b.address}] }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes:
      - match: { host: api.example.com, path_prefix: /api/ }
        upstream: a
        strip_prefix: true
        headers: { request: { set: { X-Env: prod }, remove: [X-Debug] } }
      - match: { host: api.example.com, path_prefix: /api/v2/ }
        upstream: b
        headers: { response: { remove: [Server], set: { X-Served-By: zipline } } }
      - match: { host: "*.example.com" }
        upstream: b
      - match: { path_prefix: /static/ }
        upstream: a
`;
    const z = await startRuntime(yaml);
    try {
      const addr = z.addr('web');
      const r1 = await one(addr, get('/api/users?x=1', 'API.example.com:443', 'X-Debug: 1\r\n'));
      assert.equal(r1.body.toString(), 'a /users?x=1 prod ');
      const r2 = await one(addr, get('/api/v2/z', 'api.example.com'));
      assert.equal(r2.body.toString(), 'b /api/v2/z');
      assert.equal(r2.headers.get('server'), undefined);
      assert.equal(r2.headers.get('x-served-by')?.[0], 'zipline');
      assert.equal((await one(addr, get('/', 'deep.sub.example.com'))).body.toString(), 'b /');
      assert.equal(
        (await one(addr, get('/static/x.css', 'other.test'))).body.toString().startsWith('a /static/x.css'),
        true,
      );
      const miss = await one(addr, get('/nothing', 'example.com'));
      assert.equal(miss.status, 404);
      assert.equal(miss.headers.get('x-zipline-error')?.[0], 'ZL_HTTP_NO_ROUTE');
      assert.match(miss.body.toString(), /404 Not Found \(ZL_HTTP_NO_ROUTE\)/);
      // a line zipline answered itself has the same fields, in the same order, as a proxied one
      const local = z.access.find((l) => l.error === 'ZL_HTTP_NO_ROUTE');
      assert.deepEqual(Object.keys(local ?? {}), Object.keys(z.access[0] ?? {}));
      assert.equal(local?.data_path, null);
    } finally {
      await z.stop();
    }
  });

  test('an absolute-form target is routed by its authority, which replaces Host upstream; HTTP/1.0 without Host gets the server', async () => {
    const a = await origin((req, res) =>
      res.end(`a ${req.url} ${req.headers.host} ${req.headers['x-forwarded-host'] ?? '-'}`),
    );
    const b = await origin((req, res) =>
      res.end(`b ${req.url} ${req.headers.host} ${req.headers['x-forwarded-host'] ?? '-'}`),
    );
    const yaml = `
admin: { listen: 127.0.0.1:0 }
upstreams:
  a: { servers: [${a.address}] }
  b: { servers: ["localhost:${splitAddress(b.address)[1]}"] }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes:
      - match: { host: api.example.com }
        upstream: a
      - match: { path_prefix: / }
        upstream: b
`;
    const z = await startRuntime(yaml);
    try {
      const addr = z.addr('web');
      const abs = await one(
        addr,
        'GET http://API.example.com:8080/v1?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n',
      );
      assert.equal(abs.body.toString(), 'a /v1?q=1 API.example.com:8080 API.example.com:8080');
      const noPath = await one(
        addr,
        'GET https://api.example.com?x HTTP/1.1\r\nHost: api.example.com\r\n\r\n',
      );
      assert.equal(noPath.body.toString(), 'a /?x api.example.com api.example.com');
      // logged as nginx's $request_uri and $host: the path and query, the target's authority
      await until(() => z.access.length >= 2, 'access lines');
      assert.deepEqual(
        z.access.slice(0, 2).map((l) => [l.host, l.path]),
        [
          ['API.example.com:8080', '/v1?q=1'],
          ['api.example.com', '/?x'],
        ],
      );
      const old = await one(addr, 'GET /legacy HTTP/1.0\r\n\r\n');
      assert.equal(old.status, 200, old.raw);
      assert.equal(old.body.toString(), `b /legacy localhost:${splitAddress(b.address)[1]} -`);
    } finally {
      await z.stop();
    }
  });
});

describe('bad input', () => {
  const badRequests: [string, string][] = [
    [
      'CL and TE together',
      'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    ],
    [
      'two different Content-Lengths',
      'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
    ],
    [
      'an invalid chunk size',
      'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n',
    ],
    [
      'a chunk size with a sign',
      'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n',
    ],
    ['obs-fold', 'GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n'],
    ['a bare LF', 'GET / HTTP/1.1\nHost: x\r\n\r\n'],
    ['no Host', 'GET / HTTP/1.1\r\n\r\n'],
    ['garbage', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n'],
    // no end of head: answered at the first byte no request line starts with, not at the timeout
    ['a TLS ClientHello on the plain port', '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03'],
    ['a Redis command', '*1\r\n$4\r\nPING\r\n'],
    ['an SSH banner', 'SSH-2.0-OpenSSH_9.2\r\n'],
  ];
  for (const [what, request] of badRequests) {
    test(`${what} → 400 and the connection closed; nothing reaches the origin`, async () => {
      const o = await origin();
      const z = await startRuntime(config([o.address]));
      try {
        const r = await one(z.addr('web'), request);
        assert.equal(r.status, 400, r.raw);
        assert.equal(r.headers.get('x-zipline-error')?.[0], 'ZL_HTTP_BAD_REQUEST');
        assert.ok(r.closed);
        assert.equal(o.requests, 0);
        assert.equal(z.access.at(-1)?.error, 'ZL_HTTP_BAD_REQUEST');
      } finally {
        await z.stop();
      }
    });
  }

  for (const [what, request] of [
    ['CONNECT', 'CONNECT x.test:443 HTTP/1.1\r\nHost: x.test:443\r\n\r\n'],
    [
      'a coding before chunked',
      'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
    ],
  ]) {
    test(`${what} → 501 ZL_HTTP_NOT_IMPLEMENTED and the connection closed; nothing reaches the origin`, async () => {
      const o = await origin();
      const z = await startRuntime(config([o.address]));
      try {
        const r = await one(z.addr('web'), request as string);
        assert.equal(r.status, 501, r.raw);
        assert.equal(r.headers.get('x-zipline-error')?.[0], 'ZL_HTTP_NOT_IMPLEMENTED');
        assert.ok(r.closed);
        assert.equal(o.requests, 0);
      } finally {
        await z.stop();
      }
    });
  }

  test('a head over max_header_bytes → 431 (its request line alone → 414); a client dribbling its head → 408 at client_header', async () => {
    const o = await origin();
    const z = await startRuntime(
      config([o.address], '    limits: { max_header_bytes: 2KiB }\n    timeouts: { client_header: 300ms }'),
    );
    try {
      const big = await one(z.addr('web'), get('/', 'x', `X-Big: ${'a'.repeat(3000)}\r\n`));
      assert.equal(big.status, 431);
      assert.ok(big.closed);
      // a request line alone over the limit: 414, as nginx answers
      const long = await one(z.addr('web'), get(`/${'a'.repeat(3000)}`, 'x'));
      assert.equal(long.status, 414);
      assert.equal(long.headers.get('x-zipline-error')?.[0], 'ZL_HTTP_URI_TOO_LONG');
      assert.ok(long.closed);
      const t0 = Date.now();
      const slow = await rawRequest(z.addr('web'), 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n', 5000);
      const elapsed = Date.now() - t0;
      assert.ok(slow.closed);
      assert.match(slow.data.toString(), /^HTTP\/1\.1 408 /);
      assert.match(slow.data.toString(), /ZL_HTTP_HEADER_TIMEOUT/);
      assert.ok(elapsed >= 300 && elapsed < 2000, `408 after ${elapsed} ms`);
      // its line says how long the head took, as nginx's $request_time (was 0)
      const line = z.access.at(-1);
      assert.equal(line?.error, 'ZL_HTTP_HEADER_TIMEOUT');
      assert.ok(Number(line?.response_time) >= 0.29, `response_time ${line?.response_time}`);
      assert.equal(o.requests, 0);
    } finally {
      await z.stop();
    }
  });

  test('max_body: a Content-Length over it → 413 before anything is read or sent upstream; chunked and HTTP/2 bodies are cut where they pass it; a route sets its own', async () => {
    const o = await origin();
    // a raw origin for the chunked case: what reached it, byte for byte
    let upstreamBytes = '';
    const r = await raw((s) => {
      s.on('data', (c: Buffer) => {
        upstreamBytes += c.toString('latin1');
      });
    });
    const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
upstreams:
  app: { servers: [${o.address}] }
  rawapp: { servers: ["127.0.0.1:${port(r)}"] }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    upstream: app
    limits: { max_body: 1KiB }
    routes:
      - { match: { path_prefix: /up }, upstream: app, max_body: 64KiB }
      - { match: { path_prefix: /any }, upstream: app, max_body: 0 }
      - { match: { path_prefix: /raw }, upstream: rawapp }
`);
    const post = (path: string, body: string, extra = ''): string =>
      `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n${extra}\r\n${body}`;
    try {
      const addr = z.addr('web');
      // the head alone, with Expect: 413 at once, no 100 Continue, the connection closed
      const head = post('/', '', 'Expect: 100-continue\r\n').replace(
        'Content-Length: 0',
        'Content-Length: 2000',
      );
      const big = await one(addr, head, 'POST');
      assert.equal(big.status, 413, big.raw);
      assert.equal(big.headers.get('x-zipline-error')?.[0], 'ZL_HTTP_BODY_TOO_LARGE');
      assert.ok(!big.raw.includes('100 Continue'));
      assert.ok(big.closed);
      assert.equal(o.requests, 0);
      assert.equal(z.access.at(-1)?.error, 'ZL_HTTP_BODY_TOO_LARGE');
      assert.equal(z.access.at(-1)?.status, 413);
      // at the limit: served; a route with its own limit takes more
      const atLimit = await one(addr, post('/', 'a'.repeat(1024)), 'POST');
      assert.equal(atLimit.status, 200);
      assert.equal((JSON.parse(atLimit.body.toString()) as Echo).body, 1024);
      const up = await one(addr, post('/up/file', 'a'.repeat(2000)), 'POST');
      assert.equal(up.status, 200);
      assert.equal((JSON.parse(up.body.toString()) as Echo).body, 2000);
      // 0 is no limit (nginx client_max_body_size 0), not "no body"
      const any = await one(addr, post('/any', 'a'.repeat(100_000)), 'POST');
      assert.equal(any.status, 200);
      assert.equal((JSON.parse(any.body.toString()) as Echo).body, 100_000);
      // chunked: 1,024 bytes, then one more in the same write: 413, and no byte of that read went on
      const chunked = await one(
        addr,
        `POST /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n${'a'.repeat(1024)}\r\n1\r\nb\r\n0\r\n\r\n`,
        'POST',
      );
      assert.equal(chunked.status, 413, chunked.raw);
      assert.ok(chunked.closed);
      assert.ok(!upstreamBytes.includes('b\r\n'), 'the byte past the limit was not sent on');
      assert.equal(z.access.at(-1)?.error, 'ZL_HTTP_BODY_TOO_LARGE');
      // HTTP/2 (h2c): DATA past the limit without a content-length, and a content-length over it
      const h2 = await import('node:http2');
      const session = h2.connect(`http://${addr}`);
      const h2post = (path: string, body: Buffer, length: boolean): Promise<[number, string]> =>
        new Promise((resolve, reject) => {
          const req = session.request({
            ':method': 'POST',
            ':path': path,
            ...(length ? { 'content-length': body.length } : {}),
          });
          let status = 0;
          let text = '';
          req.on('response', (h) => {
            status = Number(h[':status']);
          });
          req.on('data', (c: Buffer) => {
            text += c.toString();
          });
          req.on('close', () => resolve([status, text]));
          req.on('error', reject);
          req.end(body);
        });
      const [streamed, streamedText] = await h2post('/', Buffer.alloc(3000, 'a'), false);
      assert.equal(streamed, 413, streamedText);
      assert.match(streamedText, /ZL_HTTP_BODY_TOO_LARGE/);
      assert.equal((await h2post('/', Buffer.alloc(3000, 'a'), true))[0], 413);
      assert.equal((await h2post('/up', Buffer.alloc(3000, 'a'), false))[0], 200);
      session.close();
    } finally {
      await z.stop();
    }
  });

  test('an origin that sends garbage, a status outside 100–599, a coding other than chunked, or a chunked body bad from its first bytes → 502 ZL_UPSTREAM_BAD_RESPONSE, over HTTP/1.1 and HTTP/2', async () => {
    const answers: Record<string, string> = {
      '/': 'HTTP/1.1 two hundred OK\r\n\r\n',
      '/999': 'HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n',
      '/gzip': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
      // the head is fine; the chunk size read with it is not: nothing reached the client yet
      '/badchunk': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n',
    };
    // fine for HTTP/1.1; HTTP/2 refuses the field (connection-specific), so it is dropped there
    const h2settings = 'HTTP/1.1 200 OK\r\nHTTP2-Settings: AAMAAABk\r\nContent-Length: 2\r\n\r\nok';
    const bad = await raw((s) => {
      s.once('data', (d: Buffer) => {
        const path = d.toString('latin1').split(' ')[1] ?? '/';
        s.end(path === '/h2settings' ? h2settings : (answers[path] ?? ''));
      });
    });
    const z = await startRuntime(config([`127.0.0.1:${port(bad)}`]));
    const h2 = await import('node:http2');
    const session = h2.connect(`http://${z.addr('web')}`);
    const h2get = (path: string): Promise<IncomingHttpHeaders> =>
      new Promise((resolve, reject) => {
        const req = session.request({ ':path': path });
        req.on('response', resolve);
        req.on('error', reject);
        req.resume();
      });
    try {
      for (const path of Object.keys(answers)) {
        const r = await one(z.addr('web'), get(path));
        assert.equal(r.status, 502, path);
        assert.equal(r.headers.get('x-zipline-error')?.[0], 'ZL_UPSTREAM_BAD_RESPONSE');
        const h = await h2get(path);
        assert.equal(h[':status'], 502, `h2 ${path}`);
        assert.equal(h['x-zipline-error'], 'ZL_UPSTREAM_BAD_RESPONSE');
      }
      const h = await h2get('/h2settings');
      assert.equal(h[':status'], 200);
      assert.equal(h['http2-settings'], undefined);
    } finally {
      session.close();
      await z.stop();
    }
  });

  test('an origin that stops mid-body after the client has its first bytes: an HTTP/2 client gets RST_STREAM INTERNAL_ERROR, never END_STREAM', async () => {
    // Node's stream.close(code) ends the stream before it resets it; with nothing queued that end
    // goes out at once, and the client takes the truncated body as complete. The origin stops only
    // once the client has read what came before, so nothing is queued in zipline any more.
    let stop: () => void = () => {};
    const cut = await raw((s) => {
      s.once('data', (d: Buffer) => {
        const chunked = d.toString('latin1').startsWith('GET /chunked');
        s.write(
          chunked
            ? 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n'
            : 'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789',
        );
        stop = () => s.end();
      });
    });
    const z = await startRuntime(config([`127.0.0.1:${port(cut)}`]));
    const h2 = await import('node:http2');
    const session = h2.connect(`http://${z.addr('web')}`);
    session.on('error', () => {});
    try {
      for (const path of ['/chunked', '/length']) {
        const req = session.request({ ':path': path });
        req.on('error', () => {}); // the reset, checked below by its code
        req.once('data', () => stop());
        let ended = false;
        req.on('end', () => {
          ended = req.rstCode === h2.constants.NGHTTP2_NO_ERROR;
        });
        req.end();
        await new Promise((resolve) => req.on('close', resolve));
        assert.equal(
          req.rstCode,
          h2.constants.NGHTTP2_INTERNAL_ERROR,
          `${path}: reset, not ended as complete`,
        );
        assert.equal(ended, false, path);
      }
      await until(() => z.access.length === 2, 'access lines');
      for (const a of z.access) assert.equal(a.error, 'ZL_UPSTREAM_PREMATURE_CLOSE');
    } finally {
      session.destroy();
      await z.stop();
    }
  });

  test('an origin that answers in another protocol and waits (a TLS alert, an SSH banner) → 502 at once, not at response_header', async () => {
    const answers: Record<string, string> = {
      '/tls': '\x15\x03\x03\x00\x02\x02\x46',
      '/ssh': 'SSH-2.0-OpenSSH_9.6\r\n',
      '/h': 'H', // a head's first byte is no answer yet, and the server then says nothing
    };
    const other = await raw((s) => {
      s.once('data', (d: Buffer) => s.write(answers[d.toString('latin1').split(' ')[1] ?? ''] ?? ''));
    });
    const z = await startRuntime(
      config([`127.0.0.1:${port(other)}`], '', '    timeouts: { response_header: 1s }'),
    );
    try {
      for (const path of ['/tls', '/ssh']) {
        // at the response_header timeout it would be 504 ZL_UPSTREAM_RESPONSE_TIMEOUT
        const r = await one(z.addr('web'), get(path));
        assert.equal(r.status, 502, path);
        assert.equal(r.headers.get('x-zipline-error')?.[0], 'ZL_UPSTREAM_BAD_RESPONSE', path);
      }
      const r = await one(z.addr('web'), get('/h'));
      assert.equal(r.headers.get('x-zipline-error')?.[0], 'ZL_UPSTREAM_RESPONSE_TIMEOUT', 'a prefix waits');
    } finally {
      await z.stop();
    }
  });

  test('an origin that stops mid-body → the client connection is aborted, never a short body taken as complete', async () => {
    const cut = await raw((s) => {
      s.once('data', () => {
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n');
        s.end('only-some-bytes');
      });
    });
    const cutChunked = await raw((s) => {
      s.once('data', () => {
        s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
        s.destroy();
      });
    });
    for (const srv of [cut, cutChunked]) {
      const z = await startRuntime(config([`127.0.0.1:${port(srv)}`]));
      try {
        const r = await rawRequest(z.addr('web'), get('/'));
        assert.ok(r.closed, 'closed, not hanging');
        assert.equal(parseResponse(r.data), null, 'the response is incomplete as framed');
        assert.match(r.data.toString(), /^HTTP\/1\.1 200/);
        await until(() => z.access.length === 1, 'access line');
        assert.equal(z.access[0]?.error, 'ZL_UPSTREAM_PREMATURE_CLOSE');
        assert.equal(r.reset, false, 'a framed body: a FIN, and the length tells the client');
      } finally {
        await z.stop();
      }
    }
    // to an HTTP/1.0 client the chunked body goes close-delimited: a FIN would say "complete"
    const z = await startRuntime(config([`127.0.0.1:${port(cutChunked)}`]));
    try {
      const r = await rawRequest(z.addr('web'), 'GET / HTTP/1.0\r\nHost: x\r\n\r\n');
      assert.ok(r.closed, 'closed, not hanging');
      const text = r.data.toString('latin1');
      assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
      assert.doesNotMatch(text, /transfer-encoding/i, 'close-delimited: HTTP/1.0 has no chunked coding');
      assert.equal(r.reset, true, 'a close-delimited body cut short ends with RST');
    } finally {
      await z.stop();
    }
  });

  test('an origin that resets right after its last bytes: a close-delimited body is aborted, not completed', {
    skip: RESETS_TOLD ? false : 'telling an RST from a FIN needs the native addon',
  }, async () => {
    // libuv reports an RST that comes with the last bytes as a plain end, as it does a FIN
    const reset = await raw((s) => {
      s.once('data', () => {
        s.write(`HTTP/1.1 200 OK\r\n\r\n${'x'.repeat(20000)}`);
        s.resetAndDestroy();
      });
    });
    const fin = await raw((s) => {
      s.once('data', () => s.end(`HTTP/1.1 200 OK\r\n\r\n${'x'.repeat(20000)}`));
    });
    const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
upstreams:
  resets: { servers: [127.0.0.1:${port(reset)}] }
  fins: { servers: [127.0.0.1:${port(fin)}] }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes:
      - { match: { path_prefix: /fin }, upstream: fins }
      - { match: { path_prefix: / }, upstream: resets }
`);
    try {
      for (let i = 0; i < 5; i++) {
        const c = await dial(z.addr('web'));
        const end = endOf(c);
        c.write(get('/'));
        const { kind, data } = await end;
        assert.match(data.toString('latin1'), /^HTTP\/1\.1 200 OK\r\n/);
        assert.equal(kind, 'reset', `request ${i}: the client is reset, as its server reset zipline`);
      }
      await until(() => z.access.length === 5, 'access lines');
      for (const a of z.access) assert.equal(a.error, 'ZL_UPSTREAM_RESET');
      // the same body ended by a FIN is complete
      const c = await dial(z.addr('web'));
      const end = endOf(c);
      c.write(get('/fin'));
      const { kind, data } = await end;
      assert.equal(kind, 'fin');
      assert.ok(data.toString('latin1').endsWith('x'.repeat(20000)));
      await until(() => z.access.length === 6, 'access line');
      assert.equal(z.access[5]?.error, null);
    } finally {
      await z.stop();
    }
  });

  test('an origin that never answers → 504 at response_header; the request is not retried by default', async () => {
    let seen = 0;
    const silent = await raw((s) => {
      s.on('data', () => seen++);
    });
    const z = await startRuntime(
      config([`127.0.0.1:${port(silent)}`], '', '    timeouts: { response_header: 200ms }'),
    );
    try {
      const r = await one(z.addr('web'), get('/'));
      assert.equal(r.status, 504);
      assert.equal(r.headers.get('x-zipline-error')?.[0], 'ZL_UPSTREAM_RESPONSE_TIMEOUT');
      assert.equal(seen, 1);
    } finally {
      await z.stop();
    }
  });

  test("a request body that stops: the client not sending it is 408 at client_idle, the origin not taking it 504 at the upstream's idle; the connection then closes with the client", async () => {
    const taking = await raw((s) => s.resume()); // reads everything, never answers
    const sink = await raw((s) => s.pause()); // reads nothing: its buffers fill, then zipline's
    const cases = [
      { srv: taking, idle: '300ms', length: 1e6, sent: 1000, status: 408, code: 'ZL_HTTP_BODY_TIMEOUT' },
      {
        srv: sink,
        idle: '30s',
        length: 64 << 20,
        sent: 64 << 20,
        status: 504,
        code: 'ZL_UPSTREAM_IDLE_TIMEOUT',
      },
    ];
    for (const c of cases) {
      const z = await startRuntime(
        config(
          [`127.0.0.1:${port(c.srv)}`],
          `    timeouts: { client_idle: ${c.idle} }`,
          '    timeouts: { idle: 300ms, response_header: 30s }',
        ),
      );
      try {
        const head = `POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: ${c.length}\r\n\r\n`;
        const r = await rawRequest(
          z.addr('web'),
          [head, Buffer.alloc(c.sent)],
          10_000,
          (d) => parseResponse(d) !== null,
        );
        const res = parseResponse(r.data)?.resp;
        assert.equal(res?.status, c.status, r.data.toString('latin1', 0, 200));
        assert.equal(res?.headers.get('x-zipline-error')?.[0], c.code);
        // the client closed: zipline, which had stopped reading it, sees that now (not at client_idle)
        await until(() => z.rt.activeCount() === 0, 'the connection closed with the client', 3000);
      } finally {
        await z.stop();
      }
    }
  });

  test("a response body that stops: the origin not sending it is the upstream's idle, the client not taking it client_idle (ZL_CLIENT_IDLE_TIMEOUT, reset); chunked and spliced, HTTP/1.1 and h2c", async () => {
    let originClosed = 0;
    // `endless`: the body as fast as the connection takes it, for ever; else 16 KiB, then nothing.
    // Chunked, or with a Content-Length (1 GiB: spliced natively where the pump runs)
    const origin = (endless: boolean, chunked: boolean) =>
      raw((s) => {
        s.on('close', () => originClosed++);
        s.once('data', () => {
          const framing = chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${2 ** 30}`;
          s.write(`HTTP/1.1 200 OK\r\n${framing}\r\n\r\n`);
          const data = 'z'.repeat(0x4000);
          const chunk = Buffer.from(chunked ? `4000\r\n${data}\r\n` : data, 'latin1');
          const pump = (): void => {
            while (!s.destroyed && s.write(chunk) && endless);
            if (!s.destroyed && endless) s.once('drain', pump);
          };
          pump();
        });
      });
    const spliced = nativePump.available && process.platform === 'linux';
    for (const chunked of [true, false]) {
      for (const endless of [false, true]) {
        const srv = await origin(endless, chunked);
        const code = endless ? 'ZL_CLIENT_IDLE_TIMEOUT' : 'ZL_UPSTREAM_IDLE_TIMEOUT';
        const what = `${chunked ? 'chunked' : 'Content-Length'}, ${code}`;
        // the limit of the side that stalls is short, the other one long
        const [clientIdle, idle] = endless ? ['300ms', '5s'] : ['5s', '300ms'];
        const z = await startRuntime(
          config(
            [`127.0.0.1:${port(srv)}`],
            `    timeouts: { client_idle: ${clientIdle} }`,
            `    timeouts: { idle: ${idle} }`,
          ),
        );
        try {
          // HTTP/1.1: a client that reads nothing once its request is sent (endless), or reads
          const closedBefore = originClosed;
          const [host, p] = splitAddress(z.addr('web'));
          const client = connect(p, host);
          let received = 0;
          client.on('data', (d: Buffer) => {
            received += d.length;
          });
          client.on('error', () => {});
          client.write('GET /stream HTTP/1.1\r\nHost: x\r\n\r\n');
          if (endless) client.pause();
          await until(() => z.access.length === 1, `${what}: the exchange ended`, 5000);
          const line = z.access[0];
          assert.equal(line?.error, code, what);
          assert.equal(line?.status, 200);
          assert.equal(line?.data_path, spliced && !chunked ? 'native' : 'js', what);
          const ms = Number(line?.response_time) * 1000;
          assert.ok(ms >= 250 && ms < 3000, `${what} after ${ms} ms`);
          if (endless) {
            // reset: what zipline had sent and the client had not taken is dropped (after a FIN it
            // would wait in zipline's kernel buffers for the client, megabytes of it)
            client.resume();
            await until(() => client.closed, `${what}: the client connection closed`);
            const sent = Number(line?.bytes_out);
            assert.ok(sent > 1e6 && received < sent / 2, `${what}: received ${received} of ${sent} bytes`);
          }
          await until(() => originClosed > closedBefore || !endless, `${what}: the origin connection closed`);
          client.destroy();
          // h2c: a client that gives the stream no flow-control window (endless), or reads
          const h2 = await import('node:http2');
          const settings = endless ? { initialWindowSize: 0 } : {};
          const session = h2.connect(`http://${z.addr('web')}`, { settings });
          session.on('error', () => {});
          const req = session.request({ ':path': '/stream' });
          req.on('error', () => {});
          req.resume();
          await new Promise((resolve) => req.once('close', resolve));
          session.destroy();
          await until(() => z.access.length === 2, `${what}: the h2 exchange ended`, 5000);
          assert.equal(z.access[1]?.error, code, `${what}, over h2c`);
          assert.equal(z.access[1]?.http_version, '2');
        } finally {
          await z.stop();
        }
      }
    }
  });

  test('an https client that takes no byte of its response is reset too (ZL_CLIENT_IDLE_TIMEOUT): the TCP connection under its TLS one, so its unread bytes are dropped', async () => {
    const endless = await endlessAfter(
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n',
      Buffer.from(`4000\r\n${'z'.repeat(0x4000)}\r\n`, 'latin1'),
    );
    const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
drain_timeout: 2s
upstreams:
  app: { servers: [127.0.0.1:${port(endless)}], timeouts: { idle: 5s } }
listeners:
  - name: tls
    protocol: https
    listen: 127.0.0.1:0
    upstream: app
    tls: { cert: ${TLS}/a.crt, key: ${TLS}/a.key }
    timeouts: { client_idle: 300ms }
`);
    const [host, p] = splitAddress(z.addr('tls'));
    const client = tlsConnect({ host, port: p, servername: 'a.test', rejectUnauthorized: false });
    try {
      const received = bytesReceived(client);
      await once(client, 'secureConnect');
      client.write('GET /stream HTTP/1.1\r\nHost: a.test\r\n\r\n');
      client.pause();
      await until(() => z.access.length === 1, 'the exchange ended', 5000);
      assert.equal(z.access[0]?.error, 'ZL_CLIENT_IDLE_TIMEOUT');
      // closed with a FIN, the client would still receive all of it from zipline's kernel buffers
      client.resume();
      await until(() => client.closed, 'the client connection closed');
      const sent = Number(z.access[0]?.bytes_out);
      assert.ok(sent > 1e6 && received() < sent / 2, `received ${received()} of ${sent} bytes`);
    } finally {
      client.destroy();
      await z.stop();
    }
  });

  test('an upgraded session is one request until it closes: an active request meanwhile, then its access line with the bytes each way and its duration', async () => {
    const ws = await raw((sock) => {
      sock.once('data', () => {
        sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n');
        sock.on('data', (d: Buffer) => sock.write(d)); // echo
        sock.on('end', () => sock.end());
      });
    });
    const z = await startRuntime(config([`127.0.0.1:${port(ws)}`]));
    const [host, p] = splitAddress(z.addr('web'));
    const client = connect(p, host);
    const active = async () =>
      ((await z.rt.stats()).listeners as Record<string, { requests_active: number }>).web?.requests_active;
    try {
      let got = Buffer.alloc(0);
      client.on('data', (d: Buffer) => {
        got = Buffer.concat([got, d]);
      });
      const ended = once(client, 'end');
      await once(client, 'connect');
      client.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n');
      await until(() => got.includes('\r\n\r\n'), 'the 101');
      const headLength = got.indexOf('\r\n\r\n') + 4;
      client.write(Buffer.alloc(100_000, 0x61));
      await until(() => got.length === headLength + 100_000, 'the echo');
      assert.equal(z.access.length, 0, 'no access line while the session is open');
      assert.equal(await active(), 1);
      client.end();
      await ended;
      await until(() => z.access.length === 1, 'the access line at the close');
      const line = z.access[0];
      assert.equal(line?.status, 101);
      assert.equal(line?.error, null);
      assert.equal(line?.bytes_in, 100_000);
      assert.equal(line?.bytes_out, 100_000);
      assert.ok(Number(line?.response_time) > 0);
      assert.equal(await active(), 0);
    } finally {
      client.destroy();
      await z.stop();
    }
  });

  test('an upgraded connection whose client takes nothing is reset at client_idle, so what waits for it is dropped', async () => {
    const ws = await endlessAfter(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n',
      Buffer.alloc(0x4000, 0x7a),
    );
    const z = await startRuntime(config([`127.0.0.1:${port(ws)}`], '    timeouts: { client_idle: 300ms }'));
    const [host, p] = splitAddress(z.addr('web'));
    const client = connect(p, host);
    try {
      const received = bytesReceived(client);
      await once(client, 'connect');
      client.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n');
      client.pause();
      const l = z.rt.listeners.get('web') as unknown as { connections: Set<{ socket: Socket }> };
      await until(() => l.connections.size === 1, 'the connection upgraded');
      const zside = [...l.connections][0]?.socket as Socket;
      await until(() => l.connections.size === 0, 'closed at client_idle', 5000);
      assert.equal(z.access.length, 1);
      assert.equal(z.access[0]?.status, 101);
      assert.equal(z.access[0]?.error, 'ZL_CLIENT_IDLE_TIMEOUT');
      // closed with a FIN, the client would still receive all of it from zipline's kernel buffers
      client.resume();
      await until(() => client.closed, 'the client connection closed');
      const sent = zside.bytesWritten;
      assert.ok(sent > 1e6 && received() < sent / 2, `received ${received()} of ${sent} bytes`);
    } finally {
      client.destroy();
      await z.stop();
    }
  });

  test('an origin that answers before the request body is in: an HTTP/2 client gets the answer, then RST_STREAM NO_ERROR for the rest of its upload (RFC 9113 §8.1), and its session ends with it', async () => {
    let originClosed = false;
    const early = await raw((s) => {
      s.on('end', () => {
        originClosed = true; // zipline's FIN (the origin socket allows half-open)
      });
      s.once('data', () => s.write('HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope'));
    });
    const z = await startRuntime(config([`127.0.0.1:${port(early)}`]));
    const h2 = await import('node:http2');
    const session = h2.connect(`http://${z.addr('web')}`);
    session.on('error', () => {});
    try {
      // Node's client ends a stream only once its request is sent or the server resets it: a
      // 50 MiB upload that zipline no longer reads would leave it waiting for ever
      const total = 50 * 2 ** 20;
      const req = session.request({ ':method': 'POST', ':path': '/up', 'content-length': String(total) });
      const sent = upload(req, total);
      let status = 0;
      let body = '';
      req.on('response', (h) => {
        status = Number(h[':status']);
      });
      req.on('data', (d: Buffer) => {
        body += d.toString();
      });
      req.on('error', () => {});
      await until(() => req.closed, 'the stream closed', 5000);
      assert.equal(status, 403);
      assert.equal(body, 'nope');
      assert.equal(req.rstCode, h2.constants.NGHTTP2_NO_ERROR);
      assert.ok(sent() < total, `the upload stopped early (${sent()} of ${total} bytes)`);
      await until(() => z.access.length === 1, 'the access line');
      assert.equal(z.access[0]?.status, 403);
      // its request was not sent in full: that connection cannot carry another
      await until(() => originClosed, 'the origin connection closed');
      // and the client's session ends with the client (a stream left paused never closed)
      session.destroy();
      await until(() => z.rt.activeCount() === 0, 'the HTTP/2 session gone', 3000);
    } finally {
      session.destroy();
      await z.stop();
    }
  });

  test('an HTTP/2 client that resets its stream while its upload is held for a slow origin: 499 at once, and the session ends with the client', async () => {
    // reads nothing: the buffers fill, then zipline stops reading the client's stream
    const sink = await raw((s) => s.pause());
    const z = await startRuntime(config([`127.0.0.1:${port(sink)}`], '', '    timeouts: { idle: 10s }'));
    const h2 = await import('node:http2');
    const session = h2.connect(`http://${z.addr('web')}`);
    session.on('error', () => {});
    try {
      const req = session.request({ ':method': 'POST', ':path': '/up' });
      req.on('error', () => {});
      const sent = upload(req);
      // (an http listener's HTTP/2 front is made with its first h2c connection)
      const listener = z.rt.listeners.get('web') as unknown as { h2: { streams: Set<unknown> } | null };
      type Held = { stream: { isPaused(): boolean; readableLength: number } };
      const held = (): boolean =>
        [...(listener.h2?.streams ?? [])].some((d) => {
          const { stream } = d as Held;
          return stream.isPaused() && stream.readableLength > 0;
        });
      // a megabyte or more in the buffers between zipline and the origin, and the client's
      // flow-control window used up (what it queued no longer moves: five looks in a row), so that
      // its END_STREAM cannot go out before its reset. (How much the kernel buffers depends on its
      // TCP autotuning and memory pressure: ~4.1 MiB alone here, less beside the rest of the suite.)
      let queued = -1;
      let still = 0;
      await until(() => {
        const q = req.writableLength;
        still = held() && sent() >= 2 ** 20 && q > 0 && q === queued ? still + 1 : 0;
        queued = q;
        return still >= 5;
      }, 'the upload held').catch((err: Error) => {
        throw new Error(`${err.message} (sent ${sent()}, queued ${queued}, held ${held()})`);
      });
      const started = Date.now();
      // Node's client sends RST_STREAM NO_ERROR; Node's server ends such a stream only once its
      // readable side ends, which a paused one with bytes buffered never did: the exchange waited
      // for the origin's idle (10 s), and its 504 then threw on the closed stream
      req.close();
      await until(() => z.access.length === 1, 'the exchange ended', 5000);
      assert.equal(z.access[0]?.status, 499);
      assert.equal(z.access[0]?.error, 'ZL_CLIENT_ABORTED');
      const took = Date.now() - started;
      assert.ok(took < 2000, `at once, not at the upstream idle (${took} ms)`);
      session.destroy();
      await until(() => z.rt.activeCount() === 0, 'the HTTP/2 session gone', 3000);
    } finally {
      session.destroy();
      await z.stop();
    }
  });

  test('after its answer and FIN zipline reads and drops what the client still sends, for client_idle at most', async () => {
    const o = await origin();
    const z = await startRuntime(
      config([o.address], '    limits: { max_body: 1KiB }\n    timeouts: { client_idle: 300ms }'),
    );
    try {
      const [host, p] = splitAddress(z.addr('web'));
      const s = connect({ port: p, host, allowHalfOpen: true }); // zipline's FIN does not end it
      s.on('error', () => {});
      let answer = '';
      s.on('data', (d: Buffer) => {
        answer += d.toString('latin1');
      });
      s.write('POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n');
      // a client that keeps sending whatever the answer (a 413, then zipline's FIN)
      const chunk = Buffer.alloc(16 * 1024);
      const pump = setInterval(() => s.writable && s.write(chunk), 5);
      const started = Date.now();
      await until(() => s.closed, 'zipline to close the connection', 5000).finally(() => clearInterval(pump));
      const elapsed = Date.now() - started;
      assert.match(answer, /^HTTP\/1\.1 413 /);
      assert.ok(elapsed >= 250 && elapsed < 3000, `closed after ${elapsed} ms (client_idle 300 ms)`);
      assert.equal(o.requests, 0);
    } finally {
      await z.stop();
    }
  });

  test("routes[].timeouts: a slow route waits past its upstream's response_header, a streaming one past its idle; other routes keep the upstream's", async () => {
    // every answer comes 400 ms late; /stream sends its head and first chunk at once, the rest late
    const o = await origin((req, res) => {
      if (req.url === '/stream') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first ');
        setTimeout(() => res.end('last'), 400);
      } else setTimeout(() => res.end(`late ${req.url}`), 400);
    });
    const z = await startRuntime(
      config(
        [o.address],
        `    routes:
      - { match: { path_prefix: /slow }, upstream: app, timeouts: { response_header: 10s } }
      - { match: { path_prefix: /stream }, upstream: app, timeouts: { idle: 0 } }
      - { match: { path_prefix: /unlimited }, upstream: app, timeouts: { response_header: 0 } }`,
        '    timeouts: { response_header: 150ms, idle: 150ms }',
      ),
    );
    try {
      const quick = await one(z.addr('web'), get('/quick'));
      assert.equal(quick.status, 504, "the upstream's response_header");
      assert.equal(quick.headers.get('x-zipline-error')?.[0], 'ZL_UPSTREAM_RESPONSE_TIMEOUT');
      const slow = await one(z.addr('web'), get('/slow'));
      assert.equal(slow.status, 200, "the route's response_header");
      assert.equal(slow.body.toString(), 'late /slow');
      const stream = await one(z.addr('web'), get('/stream'));
      assert.equal(stream.status, 200);
      assert.equal(stream.body.toString(), 'first last', 'idle 0: the pause is waited out');
      const unlimited = await one(z.addr('web'), get('/unlimited'));
      assert.equal(unlimited.status, 200, 'response_header 0: no deadline');
    } finally {
      await z.stop();
    }
  });

  for (const leaves of ['closes', 'sends FIN (client_fin: abort, the default, as nginx)']) {
    test(`a client that ${leaves} before the response is logged as 499 and its upstream request is cancelled`, async () => {
      let upstreamClosed = false;
      const slow = await raw((s) => {
        s.on('end', () => {
          upstreamClosed = true;
        });
        s.resume();
      });
      const z = await startRuntime(config([`127.0.0.1:${port(slow)}`]));
      try {
        if (leaves === 'closes') await rawRequest(z.addr('web'), get('/'), 100);
        else assert.equal(await halfClose(z.addr('web'), get('/')), '', 'nothing answered');
        await until(() => z.access.length === 1, 'access line');
        assert.equal(z.access[0]?.status, 499);
        assert.equal(z.access[0]?.error, 'ZL_CLIENT_ABORTED');
        await until(() => upstreamClosed, 'upstream connection closed');
      } finally {
        await z.stop();
      }
    });
  }

  describe('client_fin: finish', () => {
    const clientEnded = (z: Awaited<ReturnType<typeof startRuntime>>): boolean =>
      clientSideClosed(z.rt.listeners.get('web') as unknown as { connections: Set<unknown> });
    const requests = ['/a', '/b', '/c'].map((p) => `GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`).join('');

    test('client_fin: finish: a FIN from a client that has not read its responses yet still gets every pipelined request answered', async () => {
      const body = 'y'.repeat(2048);
      const o = await origin((_req, res) => res.end(body));
      const z = await startRuntime(
        config([o.address], '    client_fin: finish\n    limits: { max_header_bytes: 256KiB }'),
      );
      try {
        // 232 KB of requests, all read ahead (max_header_bytes raised for it) with the FIN after
        // them; 16 MB of responses: the socket buffers fill and zipline waits for the client
        const N = 8000;
        const [host, p] = splitAddress(z.addr('web'));
        const client = connect(p, host);
        client.pause();
        client.write(`GET / HTTP/1.1\r\nHost: x\r\n\r\n`.repeat(N));
        const l = z.rt.listeners.get('web') as unknown as { connections: Set<{ state(): string }> };
        await until(() => [...l.connections].some((c) => c.state() === 'sending'), 'waiting for the client');
        client.end();
        await until(() => clientEnded(z), 'the FIN read');
        let bytes = 0;
        client.on('data', (d: Buffer) => {
          bytes += d.length;
        });
        client.resume();
        await once(client, 'close');
        assert.ok(bytes > N * body.length, `${bytes} bytes for ${N} responses of ${body.length}`);
        await until(() => z.access.length === N, `${N} access lines`);
        assert.ok(z.access.every((a) => a.status === 200));
      } finally {
        await z.stop();
      }
    });

    test('client_fin: finish (as HAProxy): requests received in full are answered, pipelined ones too, then close', async () => {
      const waiting: { url: string; answer: () => void }[] = [];
      const o = await origin((req, res) => {
        waiting.push({ url: req.url ?? '', answer: () => res.end(`ok ${req.url}`) });
      });
      const z = await startRuntime(config([o.address], '    client_fin: finish'));
      try {
        const reply = halfClose(z.addr('web'), requests);
        // every answer leaves the origin only once zipline has read the client's FIN
        await until(() => waiting.length === 1 && clientEnded(z), 'the first request upstream, the FIN read');
        for (let i = 0; i < 3; i++) {
          await until(() => waiting.length > 0, `request ${i + 1} upstream`);
          waiting.shift()?.answer();
        }
        const text = await reply;
        assert.deepEqual(
          [...text.matchAll(/HTTP\/1\.1 (\d+)[\s\S]*?ok (\/\w)/g)].map((m) => `${m[1]} ${m[2]}`),
          ['200 /a', '200 /b', '200 /c'],
        );
        await until(() => z.access.length === 3, 'three access lines');
        assert.deepEqual(
          z.access.map((a) => a.status),
          [200, 200, 200],
        );

        // an upgrade asked for just before the FIN: after the 101 the FIN reaches the origin
        let originSawFin = false;
        const ws = await raw((sock) => {
          sock.once('data', () =>
            sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n'),
          );
          sock.on('end', () => {
            originSawFin = true;
            sock.end();
          });
        });
        const zu = await startRuntime(config([`127.0.0.1:${port(ws)}`], '    client_fin: finish'));
        try {
          const up = await halfClose(
            zu.addr('web'),
            'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n',
          );
          assert.match(up, /^HTTP\/1\.1 101 /);
          assert.equal(originSawFin, true, 'the client FIN was passed on through the pump');
        } finally {
          await zu.stop();
        }

        // a request cut short by the FIN cannot be answered: 499
        const cut = await halfClose(
          z.addr('web'),
          'POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc',
        );
        assert.equal(cut, '');
        await until(() => z.access.length === 4, 'the cut request logged');
        assert.equal(z.access[3]?.status, 499);
      } finally {
        await z.stop();
      }
    });
  });

  test('client_fin: finish and a client that closed both ways: the late answer finds it gone, the connection is torn down', async () => {
    const waiting: (() => void)[] = [];
    const o = await origin((_req, res) => {
      waiting.push(() => res.end('late'));
    });
    const z = await startRuntime(config([o.address], '    client_fin: finish'));
    try {
      const l = z.rt.listeners.get('web') as unknown as { connections: Set<unknown> };
      const r = await rawRequest(z.addr('web'), get('/gone'), 100);
      assert.equal(r.data.length, 0, 'nothing was answered before the client left');
      await until(() => waiting.length === 1 && clientSideClosed(l), 'request upstream, client FIN read');
      waiting.shift()?.();
      await until(() => z.access.length === 1, 'access line');
      await until(() => l.connections.size === 0, 'the client connection torn down');
      // the upstream connection was not spoiled: the next request reuses or replaces it and succeeds
      const next = rawRequest(z.addr('web'), get('/next'), 5000, (d) => d.includes('late'));
      await until(() => waiting.length === 1, 'second request upstream');
      waiting.shift()?.();
      assert.match((await next).data.toString(), /^HTTP\/1\.1 200 /);
    } finally {
      await z.stop();
    }
  });

  test('client_fin: finish and a client that resets right after its request (the RST read as an end): 499, the upstream request cancelled', {
    skip: RESETS_TOLD ? false : 'telling an RST from a FIN needs the native addon',
  }, async () => {
    const o = await origin((_req, res) => {
      // answered on the next turn: by then zipline has read what the client did after its request
      setImmediate(() => {
        if (!res.destroyed) res.end('late');
      });
    });
    const z = await startRuntime(config([o.address], '    client_fin: finish'));
    try {
      for (let i = 0; i < 5; i++) {
        const s = await dial(z.addr('web'));
        s.write(get(`/r${i}`));
        s.resetAndDestroy();
        await until(() => z.access.length === i + 1, `access line ${i + 1}`);
        assert.equal(z.access[i]?.status, 499, `try ${i}: ${JSON.stringify(z.access[i])}`);
        assert.equal(z.access[i]?.error, 'ZL_CLIENT_ABORTED');
      }
    } finally {
      await z.stop();
    }
  });

  test("coded errors are counted in zipline_http_errors_total; /stats counts each listener's requests by status class", async () => {
    const o = await origin();
    const z = await startRuntime(
      config(
        [o.address],
        '    routes: [{ match: { path_prefix: /down }, upstream: dead }]',
        '  dead: { servers: ["127.0.0.1:1"] }',
      ),
    );
    try {
      await one(z.addr('web'), 'GET / HTTP/1.1\r\n\r\n'); // 400, answered by zipline itself
      const text = await metrics.httpErrors.get();
      const v = text.values.find(
        (x) => x.labels.listener === 'web' && x.labels.code === 'ZL_HTTP_BAD_REQUEST',
      );
      assert.ok(v !== undefined && v.value >= 1);
      for (let i = 0; i < 3; i++) assert.equal((await one(z.addr('web'), get('/'))).status, 200);
      assert.equal((await one(z.addr('web'), get('/down'))).status, 502);
      const stats = (await (await fetch(`${z.rt.admin.url()}stats`)).json()) as {
        listeners: Record<string, { requests: Record<string, number>; requests_active: number }>;
      };
      const web = stats.listeners.web;
      assert.deepEqual(web?.requests, { total: 5, '1xx': 0, '2xx': 3, '3xx': 0, '4xx': 1, '5xx': 1 });
      assert.equal(web?.requests_active, 0);
    } finally {
      await z.stop();
    }
  });
  test('zipline_request_duration_seconds: one series per route, upstream and status class; a reload keeps counting into the same series', async () => {
    const o = await origin((req, res) => {
      res.statusCode = Number(req.url?.slice(1)) || 200;
      res.end('x');
    });
    const cfg = (extra: string): string =>
      config([o.address], `    routes:\n      - { match: { path_prefix: /4 }, upstream: app${extra} }`);
    const z = await startRuntime(cfg(''));
    const count = async (route: string, cls: string): Promise<number> => {
      const v = (await metrics.requestDuration.get()).values.find(
        (x) =>
          x.metricName === 'zipline_request_duration_seconds_count' &&
          x.labels.listener === 'web' &&
          x.labels.route === route &&
          x.labels.code_class === cls,
      );
      return v?.value ?? 0;
    };
    try {
      const before = {
        ok: await count('default', '2xx'),
        api4: await count('*/4', '4xx'),
        redirect: await count('default', '3xx'),
      };
      for (const path of ['/200', '/201', '/302', '/404', '/410', '/404']) {
        const r = await one(z.addr('web'), `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
        assert.equal(r.status, Number(path.slice(1)));
      }
      assert.equal((await count('default', '2xx')) - before.ok, 2);
      assert.equal((await count('default', '3xx')) - before.redirect, 1);
      assert.equal((await count('*/4', '4xx')) - before.api4, 3, '/404, /410, /404 take the /4 route');
      const next = loadConfigText(cfg(', headers: { response: { set: { X-R: "1" } } }'), {});
      assert.ok(next.ok);
      assert.deepEqual((await z.rt.reload(next.config)).listeners.changed, ['web']);
      assert.equal((await one(z.addr('web'), 'GET /404 HTTP/1.1\r\nHost: x\r\n\r\n')).status, 404);
      assert.equal((await count('*/4', '4xx')) - before.api4, 4, 'the same series after a reload');
    } finally {
      await z.stop();
    }
  });
});

describe('large bodies (spliced natively on Linux, streamed in JavaScript elsewhere)', () => {
  const big = Buffer.alloc(2 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32BE(i, i);
  for (const native of ['auto', 'off'] as const) {
    test(`native: ${native}: a 2 MiB body arrives intact, the connections are reused after it; a cut upstream aborts the client`, async () => {
      const o = await origin((req, res) => {
        if (req.url === '/big') res.end(big);
        else res.end('small');
      });
      const cut = await raw((s) => {
        s.once('data', () => {
          s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`);
          s.end(big.subarray(0, 300 * 1024));
        });
      });
      const z = await startRuntime(
        `${config([o.address])}    native: ${native}\n  - { name: cut, protocol: http, listen: 127.0.0.1:0, upstream: cut, native: ${native} }\n`.replace(
          'upstreams:\n',
          `upstreams:\n  cut: { servers: [127.0.0.1:${port(cut)}], retry: { attempts: 0 } }\n`,
        ),
      );
      try {
        const c = await KeepAliveClient.open(z.addr('web'));
        // many in a row: a body's first bytes go through JavaScript (and may fill the client
        // socket) before the rest is spliced; the client's 'drain' must not restart upstream reads
        for (let i = 0; i < 20; i++) {
          const r = await c.send(get('/big'));
          assert.equal(r.status, 200);
          assert.ok(r.body.equals(big), `body ${i} intact`);
          assert.equal((await c.send(get('/small'))).body.toString(), 'small');
        }
        c.close();
        assert.equal(o.connections, 1, 'one upstream connection served all forty');
        const paths = new Set(z.access.filter((l) => l.path === '/big').map((l) => l.data_path));
        assert.deepEqual([...paths], [native === 'auto' && nativePump.available ? 'native' : 'js']);
        const r = await rawRequest(z.addr('cut'), get('/'));
        assert.ok(r.closed);
        assert.equal(parseResponse(r.data), null, 'the truncated body is not complete as framed');
        await until(() => z.access.some((l) => l.listener === 'cut'), 'access line');
        assert.equal(z.access.find((l) => l.listener === 'cut')?.error, 'ZL_UPSTREAM_PREMATURE_CLOSE');
        // a client that leaves mid-body: everything is torn down
        await rawRequest(z.addr('web'), get('/big'), 20);
        await until(() => z.rt.activeCount() === 0, 'connections closed');
      } finally {
        await z.stop();
      }
    });

    test(`native: ${native}: a client that leaves mid-download is logged with what it was sent (bytes_out, data_path)`, async () => {
      const huge = Buffer.alloc(32 * 1024 * 1024, 'z');
      const o = await origin((_req, res) => res.end(huge));
      const z = await startRuntime(`${config([o.address])}    native: ${native}\n`);
      try {
        const [host, p] = splitAddress(z.addr('web'));
        const sock = connect(p, host, () => sock.write(get('/huge')));
        let received = 0;
        await new Promise<void>((resolve) => {
          sock.on('data', (d: Buffer) => {
            received += d.length;
            if (received >= 1024 * 1024 && !sock.isPaused()) {
              // stop reading and send a FIN: zipline (client_fin: abort) ends the request on its
              // side while a native job is still on the body, waiting for the client to read
              sock.pause();
              sock.end();
              resolve();
            }
          });
        });
        const line = (await until(() => z.access.find((l) => l.path === '/huge'), 'access line')) as Record<
          string,
          unknown
        >;
        assert.equal(line.error, 'ZL_CLIENT_ABORTED');
        const sent = line.bytes_out as number;
        // a cancelled native job said what it had delivered (before, only the first read's bytes)
        assert.ok(
          sent >= received - 1024 && sent < huge.length,
          `bytes_out ${sent}, client got ${received} with the head`,
        );
        assert.equal(line.data_path, native === 'auto' && nativePump.available ? 'native' : 'js');
        sock.destroy();
      } finally {
        await z.stop();
      }
    });
  }
});
