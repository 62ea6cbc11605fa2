/**
 * `upstreams.*.http_version: 2`: http/https listeners speak HTTP/2 to the servers. gRPC end to
 * end with a real client and server (`@grpc/grpc-js`: unary, server streaming, bidirectional,
 * statuses and trailing metadata; h2c and TLS on both sides), HTTP/1.1 clients in front of an
 * HTTP/2 origin (chunked both ways, keep-alive, HEAD), one session per server, a refused stream
 * sent elsewhere, failures coded, and the health-check combination `check` refuses.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import {
  type Http2Server,
  constants as h2,
  connect as h2connect,
  createServer as h2server,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2';
import { type AddressInfo, connect } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadConfigText } from '../../src/config/load.js';
import { KeepAliveClient, parseResponse, type RawResponse, rawRequest } from '../helpers/http.js';
import { closeServer, refusedPort, tcpServer, until } from '../helpers/net.js';
import { ROOT, startRuntime } from '../helpers/zipline.js';

const TLS = join(ROOT, 'test/fixtures/tls');
const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

// ---- a gRPC service with raw-byte messages (no .proto needed) --------------------------------

const bytes = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const SERVICE: grpc.ServiceDefinition = {
  echo: { path: '/zl.Test/Echo', requestStream: false, responseStream: false, ...wire() },
  count: { path: '/zl.Test/Count', requestStream: false, responseStream: true, ...wire() },
  chat: { path: '/zl.Test/Chat', requestStream: true, responseStream: true, ...wire() },
};
function wire() {
  return {
    requestSerialize: bytes.serialize,
    requestDeserialize: bytes.deserialize,
    responseSerialize: bytes.serialize,
    responseDeserialize: bytes.deserialize,
  };
}
const Client = grpc.makeGenericClientConstructor(SERVICE, 'Test');
type TestClient = grpc.Client & {
  echo(req: Buffer, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res?: Buffer) => void): void;
  count(req: Buffer): grpc.ClientReadableStream<Buffer>;
  chat(): grpc.ClientDuplexStream<Buffer, Buffer>;
};

async function grpcServer(tls: boolean): Promise<{ address: string; calls: () => number }> {
  let calls = 0;
  const server = new grpc.Server();
  server.addService(SERVICE, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      calls++;
      const text = call.request.toString();
      if (text === 'missing') {
        cb({ code: grpc.status.NOT_FOUND, details: 'no such thing' });
        return;
      }
      const trailer = new grpc.Metadata();
      trailer.set('x-served-by', 'grpc-origin');
      trailer.set('x-saw-forwarded-for', String(call.metadata.get('x-forwarded-for')[0] ?? ''));
      cb(null, Buffer.from(text.split('').reverse().join('')), trailer);
    },
    count: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      calls++;
      const n = Number(call.request.toString());
      for (let i = 1; i <= n; i++) call.write(Buffer.from(String(i)));
      call.end();
    },
    chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      calls++;
      call.on('data', (m: Buffer) => call.write(Buffer.from(`re:${m}`)));
      call.on('end', () => call.end());
    },
  });
  const creds = tls
    ? grpc.ServerCredentials.createSsl(null, [
        { cert_chain: readFileSync(join(TLS, 'good.crt')), private_key: readFileSync(join(TLS, 'good.key')) },
      ])
    : grpc.ServerCredentials.createInsecure();
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  cleanups.push(() => server.forceShutdown());
  return { address: `127.0.0.1:${port}`, calls: () => calls };
}

function client(address: string, tls: boolean): TestClient {
  const c = tls
    ? new Client(address, grpc.credentials.createSsl(readFileSync(join(TLS, 'a.crt'))), {
        'grpc.ssl_target_name_override': 'a.test',
        'grpc.default_authority': 'a.test',
      })
    : new Client(address, grpc.credentials.createInsecure());
  cleanups.push(() => c.close());
  return c as unknown as TestClient;
}

function echo(c: TestClient, text: string): Promise<{ reply: string; trailers: grpc.Metadata }> {
  return new Promise((resolve, reject) => {
    let trailers = new grpc.Metadata();
    const call = c.echo(Buffer.from(text), new grpc.Metadata(), (err, res) =>
      err ? reject(err) : setImmediate(() => resolve({ reply: String(res), trailers })),
    );
    (call as unknown as grpc.ClientUnaryCall).on('status', (s: grpc.StatusObject) => {
      trailers = s.metadata;
    });
  });
}

function collect(stream: grpc.ClientReadableStream<Buffer>): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const got: string[] = [];
    stream.on('data', (m: Buffer) => got.push(m.toString()));
    stream.on('error', reject);
    stream.on('end', () => resolve(got));
  });
}

function config(servers: string, extra = ''): string {
  return `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 2s
upstreams:
  g:
    http_version: 2
    servers: [${servers}]
${extra}
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, upstream: g }
  - name: tls
    protocol: https
    listen: 127.0.0.1:0
    upstream: g
    tls: { cert: ${TLS}/a.crt, key: ${TLS}/a.key }
`;
}

for (const originTls of [false, true]) {
  test(`gRPC through http and https listeners to an ${originTls ? 'h2 (TLS)' : 'h2c'} server: unary, streaming, statuses, trailing metadata`, async () => {
    const origin = await grpcServer(originTls);
    const z = await startRuntime(
      config(origin.address, originTls ? `    tls: { ca: ${TLS}/ca.crt, server_name: good.test }` : ''),
    );
    try {
      for (const [listener, tls] of [
        ['web', false],
        ['tls', true],
      ] as const) {
        const c = client(z.addr(listener), tls);
        const { reply, trailers } = await echo(c, 'zipline');
        assert.equal(reply, 'enilpiz');
        assert.equal(trailers.get('x-served-by')[0], 'grpc-origin', 'trailing metadata reached the client');
        assert.equal(trailers.get('x-saw-forwarded-for')[0], '127.0.0.1');
        await assert.rejects(echo(c, 'missing'), (err: grpc.ServiceError) => {
          assert.equal(err.code, grpc.status.NOT_FOUND);
          assert.equal(err.details, 'no such thing');
          return true;
        });
        assert.deepEqual(await collect(c.count(Buffer.from('5'))), ['1', '2', '3', '4', '5']);
        const chat = c.chat();
        const replies = collect(chat);
        for (const m of ['a', 'b', 'c']) chat.write(Buffer.from(m));
        chat.end();
        assert.deepEqual(await replies, ['re:a', 're:b', 're:c']);
      }
      await until(() => z.access.length === 8, 'access lines');
      assert.ok(z.access.every((l) => l.status === 200 && l.http_version === '2' && l.error === null));
      assert.equal(origin.calls(), 8);
    } finally {
      await z.stop();
    }
  });
}

// ---- HTTP/1.1 clients in front of an HTTP/2 origin ----------------------------------------------

/** A node:http2 origin: `handler` answers each stream (with its request body read). */
async function h2Origin(
  handler: (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, body: Buffer) => void,
): Promise<{ address: string; server: Http2Server; sessions: () => number }> {
  let sessions = 0;
  const server = h2server();
  server.on('session', () => sessions++);
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    const chunks: Buffer[] = [];
    stream.on('data', (d: Buffer) => chunks.push(d));
    stream.on('end', () => handler(stream, headers, Buffer.concat(chunks)));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(() => new Promise((r) => server.close(r)));
  return { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, server, sessions: () => sessions };
}

/** One HTTP/1.1 request on a connection of its own. */
async function request(address: string, raw: string | Buffer, method = 'GET'): Promise<RawResponse> {
  const c = await KeepAliveClient.open(address);
  try {
    return await c.send(raw, method);
  } finally {
    c.close();
  }
}

function post(path: string, body: string): string {
  return `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

test('HTTP/1.1 clients: chunked request and response bodies, trailers in the last chunk, keep-alive, HEAD; one session for all', async () => {
  const origin = await h2Origin((stream, h, body) => {
    if (h[':path'] === '/dup') {
      stream.respond({ ':status': 200 });
      stream.end(JSON.stringify([h['if-none-match'], h['x-a'], h.cookie]));
      return;
    }
    if (h[':method'] === 'HEAD') {
      stream.respond({ ':status': 200, 'content-length': '1234' }, { endStream: true });
      return;
    }
    stream.respond(
      { ':status': 200, 'x-body-sha': sha(body), 'x-te': String(h.te) },
      { waitForTrailers: true },
    );
    stream.on('wantTrailers', () =>
      stream.sendTrailers({ 'x-trailer': 'end', 'x-list': ['a', 'b'], 'set-cookie': 'no' }),
    );
    stream.end(body.length > 0 ? body : Buffer.from(`${h[':method']} ${h[':path']}`));
  });
  const z = await startRuntime(config(origin.address));
  const c = await KeepAliveClient.open(z.addr('web'));
  try {
    const body = randomBytes(300_000);
    const chunked = Buffer.concat([
      Buffer.from(
        `POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${(100_000).toString(16)}\r\n`,
      ),
      body.subarray(0, 100_000),
      Buffer.from(`\r\n${(200_000).toString(16)}\r\n`),
      body.subarray(100_000),
      Buffer.from('\r\n0\r\n\r\n'),
    ]);
    const res = await c.send(chunked);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-body-sha')?.[0], sha(body), 'the origin got the de-chunked body');
    assert.equal(res.headers.get('x-te')?.[0], 'trailers');
    assert.equal(res.headers.get('transfer-encoding')?.[0], 'chunked');
    assert.equal(sha(res.body), sha(body), 'the client got it back whole');
    assert.deepEqual(
      [...(res.trailers ?? [])],
      [
        ['x-trailer', ['end']],
        ['x-list', ['a, b']], // Node's client joins a repeated field
      ],
      'the trailers, in the last chunk; none that framing depends on',
    );
    for (let i = 0; i < 20; i++) {
      const r = await c.send(`GET /n${i} HTTP/1.1\r\nHost: x\r\n\r\n`);
      assert.equal(r.status, 200);
      assert.equal(r.body.toString(), `GET /n${i}`);
      assert.deepEqual(r.trailers?.get('x-trailer'), ['end']);
    }
    // repeated fields: one field, values joined (Node refuses repeats of If-None-Match); cookies
    const dup = await c.send(
      'GET /dup HTTP/1.1\r\nHost: x\r\nIf-None-Match: "a"\r\nX-A: 1\r\nCookie: a=1\r\n' +
        'If-None-Match: "b"\r\nX-A: 2\r\nCookie: b=2\r\n\r\n',
    );
    assert.equal(dup.status, 200, dup.body.toString());
    assert.deepEqual(JSON.parse(dup.body.toString()), ['"a", "b"', '1, 2', 'a=1; b=2']);
    const head = await c.send('HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length')?.[0], '1234');
    // what follows on the same connection is the next response: no trailer section was sent
    const last = await c.send('GET /last HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(last.body.toString(), 'GET /last');
    assert.ok(!last.head.includes('x-trailer'));
    assert.equal(c.closed, false, 'one keep-alive connection for all');
    assert.equal(origin.sessions(), 1, 'every request went on one HTTP/2 session');
  } finally {
    c.close();
    await z.stop();
  }
});

test("a server's SETTINGS_MAX_CONCURRENT_STREAMS: requests past it go on another session, none waits behind long-lived streams", async () => {
  const held: ServerHttp2Stream[] = [];
  const sessions = new Set<unknown>();
  const server = h2server({ settings: { maxConcurrentStreams: 2 } });
  server.on('stream', (stream, h) => {
    stream.on('error', () => {});
    sessions.add(stream.session);
    if (h[':path'] === '/hold')
      held.push(stream); // answered later (a watch, a long poll)
    else stream.end(`ok ${h[':path']}`);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(() => new Promise((r) => server.close(r)));
  const z = await startRuntime(config(`127.0.0.1:${(server.address() as AddressInfo).port}`));
  const clients: KeepAliveClient[] = [];
  const release = (): void => {
    for (const stream of held.splice(0)) {
      stream.respond({ ':status': 200 });
      stream.end('held');
    }
  };
  try {
    // five at once on a cold pool: they wait for the first session's SETTINGS, two go on it, the
    // others on the sessions opened after it
    for (let i = 0; i < 5; i++) clients.push(await KeepAliveClient.open(z.addr('web')));
    const burst = clients.map((c) => c.send('GET /hold HTTP/1.1\r\nHost: x\r\n\r\n'));
    await until(() => held.length === 5, 'all five at the server at once (two per connection)');
    assert.equal(sessions.size, 3, 'two streams per session');
    release();
    for (const r of await Promise.all(burst)) assert.equal(r.body.toString(), 'held');
    // none was sent past the limit (the server would refuse it, REFUSED_STREAM, and cost a retry)
    await until(() => z.access.length === 5, 'five access lines');
    assert.deepEqual(
      z.access.map((l) => l.attempts),
      [1, 1, 1, 1, 1],
    );
    // with the limit known: two more held on a session with room, the next three where there is room
    const more = clients.map((c) => c.send('GET /hold HTTP/1.1\r\nHost: x\r\n\r\n'));
    await until(() => held.length === 5, 'five held again');
    assert.equal(sessions.size, 3, 'the sessions with room took them: no new one');
    release();
    for (const r of await Promise.all(more)) assert.equal(r.body.toString(), 'held');
    assert.equal((await request(z.addr('web'), 'GET /after HTTP/1.1\r\nHost: x\r\n\r\n')).status, 200);
    assert.equal(sessions.size, 3);
  } finally {
    for (const c of clients) c.close();
    await z.stop();
  }
});

test('a stream the server refuses goes to another server, whatever its method; a server that is no HTTP/2 server is 502', async () => {
  const refusing = await h2Origin((stream) => stream.close(h2.NGHTTP2_REFUSED_STREAM));
  const good = await h2Origin((stream, h) => {
    stream.respond({ ':status': 200 });
    stream.end(`served ${h[':method']}`);
  });
  const z = await startRuntime(config(`${refusing.address}, ${good.address}`));
  try {
    for (let i = 0; i < 4; i++) {
      const r = await request(z.addr('web'), post('/p', 'x'));
      assert.equal(r.status, 200);
      assert.equal(r.body.toString(), 'served POST');
    }
    assert.ok(
      z.access.some((l) => l.attempts === 2),
      'a refused stream was retried',
    );
  } finally {
    await z.stop();
  }
  const http1 = await tcpServer((s) => {
    s.on('data', () => s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n'));
  });
  cleanups.push(() => closeServer(http1));
  const z2 = await startRuntime(config(`127.0.0.1:${(http1.address() as AddressInfo).port}`));
  try {
    const r = await request(z2.addr('web'), post('/', 'x'));
    assert.equal(r.status, 502);
    assert.equal(r.headers.get('x-zipline-error')?.[0], 'ZL_UPSTREAM_BAD_RESPONSE');
  } finally {
    await z2.stop();
  }
});

test('failures are coded: a refused connect fails over, a silent server is 504, a reset or a lost connection mid-body aborts an HTTP/2 client, a body the server does not take is 504', async () => {
  const dead = await refusedPort();
  const silent = await h2Origin(() => {});
  const resetting = await h2Origin((stream) => {
    stream.respond({ ':status': 200 });
    stream.write('partial');
    // RST_STREAM INTERNAL_ERROR mid-body (close() would end the stream first: a complete response)
    setImmediate(() => stream.destroy(new Error('reset mid-body')));
  });
  // the server's whole connection goes away mid-body (Node then ends the stream's readable side)
  const dying = await h2Origin((stream) => {
    stream.respond({ ':status': 200 });
    stream.write('partial');
    setImmediate(() => stream.session?.destroy());
  });
  // the head, the body's bytes and the stream's end arrive in one read, and the end breaks the
  // head's content-length (a stream error): all in one turn, before any write left
  const short = await h2Origin((stream) => {
    stream.respond({ ':status': 200, 'content-length': '50' });
    stream.end('0123456789');
  });
  // a server that gives no flow-control window: it takes no request body at all
  const windowless = h2server({ settings: { initialWindowSize: 0 } });
  windowless.on('stream', (stream) => stream.on('error', () => {}));
  windowless.listen(0, '127.0.0.1');
  await once(windowless, 'listening');
  cleanups.push(() => new Promise((r) => windowless.close(r)));
  const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
drain_timeout: 2s
upstreams:
  dead_first:
    http_version: 2
    balance: round_robin
    servers:
      - { address: '127.0.0.1:${dead}', max_fails: 0 }
      - { address: '${silent.address}', max_fails: 0 }
    timeouts: { response_header: 300ms }
    retry: { attempts: 1 }
  resetting: { http_version: 2, servers: [${resetting.address}] }
  dying: { http_version: 2, servers: [${dying.address}] }
  short: { http_version: 2, servers: [${short.address}] }
  windowless:
    http_version: 2
    servers: ['127.0.0.1:${(windowless.address() as AddressInfo).port}']
    timeouts: { idle: 300ms }
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:0
    routes:
      - { match: { path_prefix: /reset }, upstream: resetting }
      - { match: { path_prefix: /die }, upstream: dying }
      - { match: { path_prefix: /short }, upstream: short }
      - { match: { path_prefix: /upload }, upstream: windowless }
      - { upstream: dead_first }
`);
  try {
    const r = await request(z.addr('web'), 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(r.status, 504);
    assert.equal(r.headers.get('x-zipline-error')?.[0], 'ZL_UPSTREAM_RESPONSE_TIMEOUT');
    assert.equal(z.access[0]?.attempts, 2, 'the refused server first, then the silent one');
    // a session whose stream got no answer in time may be dead (a server gone without a reset):
    // the next request opens another
    const again = await request(z.addr('web'), 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(again.status, 504);
    assert.equal(silent.sessions(), 2);
    const session = h2connect(`http://${z.addr('web')}`);
    cleanups.push(() => session.destroy());
    for (const path of ['/reset', '/die']) {
      const stream = session.request({ ':path': path });
      stream.on('error', () => {}); // the reset, checked below by its code
      stream.end();
      const [, code] = await Promise.all([
        once(stream, 'response'),
        new Promise<number>((resolve) => stream.on('close', () => resolve(stream.rstCode ?? -1))),
      ]);
      assert.equal(
        code,
        h2.NGHTTP2_INTERNAL_ERROR,
        `${path}: the client stream is reset, not ended as complete`,
      );
      await until(() => z.access.some((l) => l.path === path), `${path} access line`);
      assert.equal(z.access.find((l) => l.path === path)?.error, 'ZL_UPSTREAM_RESET');
    }
    // an HTTP/1.1 client gets what a proxy writing as it goes would have sent, then the close
    const cut = await rawRequest(z.addr('web'), 'GET /short HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.ok(cut.closed, 'closed, not hanging');
    const text = cut.data.toString('latin1');
    assert.match(text, /^HTTP\/1\.1 200 OK\r\ncontent-length: 50\r\n/);
    assert.ok(text.endsWith('\r\n\r\n0123456789'), JSON.stringify(text));
    assert.equal(parseResponse(cut.data), null, 'short of its content-length');
    // a request body the server does not take is its stall (504 at its idle), not the client's
    const upload = await request(
      z.addr('web'),
      Buffer.concat([
        Buffer.from('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n'),
        Buffer.alloc(100_000),
      ]),
    );
    assert.equal(upload.status, 504);
    assert.equal(upload.headers.get('x-zipline-error')?.[0], 'ZL_UPSTREAM_IDLE_TIMEOUT');
  } finally {
    await z.stop();
  }
});

/** A gRPC server with only grpc.health.v1 `Health/Check`: `status()` answers for '' and `zl.Test`. */
async function healthServer(status: () => number, withHealth = true, tls = false): Promise<{ port: number }> {
  const server = new grpc.Server();
  if (withHealth) {
    server.addService(
      {
        check: {
          path: '/grpc.health.v1.Health/Check',
          requestStream: false,
          responseStream: false,
          ...wire(),
        },
      },
      {
        check: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
          // HealthCheckRequest { string service = 1 }: empty, or 0x0a, length, name
          const name = call.request.length === 0 ? '' : call.request.subarray(2).toString();
          cb(null, Buffer.from([0x08, name === '' || name === 'zl.Test' ? status() : 3]));
        },
      },
    );
  } else server.addService(SERVICE, {});
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      '127.0.0.1:0',
      tls
        ? grpc.ServerCredentials.createSsl(null, [
            {
              cert_chain: readFileSync(join(TLS, 'good.crt')),
              private_key: readFileSync(join(TLS, 'good.key')),
            },
          ])
        : grpc.ServerCredentials.createInsecure(),
      (err, p) => (err ? reject(err) : resolve(p)),
    ),
  );
  cleanups.push(() => server.forceShutdown());
  return { port };
}

test('health_check type grpc: SERVING stays in rotation (h2c and TLS), NOT_SERVING, SERVICE_UNKNOWN and no health service leave it', async () => {
  let bStatus = 2; // NOT_SERVING
  const a = await healthServer(() => 1);
  const b = await healthServer(() => bStatus);
  const c = await healthServer(() => 1, false);
  const d = await healthServer(() => 1, true, true);
  const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
drain_timeout: 2s
upstreams:
  g:
    http_version: 2
    servers: [127.0.0.1:${a.port}, 127.0.0.1:${b.port}, 127.0.0.1:${c.port}]
    health_check: { type: grpc, interval: 100ms, timeout: 90ms, fall: 1, rise: 1 }
  named:
    http_version: 2
    servers: [127.0.0.1:${a.port}]
    health_check: { type: grpc, service: other.Service, interval: 100ms, timeout: 90ms, fall: 1 }
  secure:
    http_version: 2
    servers: [127.0.0.1:${d.port}]
    tls: { ca: ${TLS}/ca.crt, server_name: good.test }
    health_check: { type: grpc, service: zl.Test, interval: 100ms, timeout: 90ms, fall: 1 }
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, upstream: g }
`);
  try {
    const [ea, eb, ec] = z.rt.upstreams.get('g')?.endpoints ?? [];
    assert.ok(ea && eb && ec);
    await until(() => ea.checkPasses >= 1 && !eb.activeHealthy && !ec.activeHealthy, 'checks to decide');
    assert.equal(ea.activeHealthy, true);
    assert.equal(eb.lastCheckError, 'NOT_SERVING');
    assert.equal(ec.lastCheckError, `grpc-status ${grpc.status.UNIMPLEMENTED}`);
    const named = z.rt.upstreams.get('named')?.endpoints[0];
    await until(() => named?.lastCheckError === 'SERVICE_UNKNOWN', 'the unknown service to fail');
    const secure = z.rt.upstreams.get('secure')?.endpoints[0];
    await until(() => (secure?.checkPasses ?? 0) >= 1, 'a check over TLS (ALPN h2) to pass');
    bStatus = 1;
    await until(() => eb.activeHealthy, 'b back in rotation once SERVING');
  } finally {
    await z.stop();
  }
});

test('check: an http health check with http_version 2 is refused with its place', () => {
  const r = loadConfigText(
    `
upstreams:
  g:
    http_version: 2
    servers: [127.0.0.1:9]
    health_check: { type: http, path: /healthz }
listeners:
  - { protocol: http, listen: 127.0.0.1:0, upstream: g }
`,
    {},
  );
  assert.equal(r.ok, false);
  assert.ok(
    !r.ok && r.issues.some((i) => i.path === 'upstreams.g.health_check.type' && /type: tcp/.test(i.message)),
  );
  const service = loadConfigText(
    'upstreams: { g: { servers: [127.0.0.1:9], health_check: { type: tcp, service: x } } }\nlisteners: []\n',
    {},
  );
  assert.ok(!service.ok && service.issues.some((i) => i.path === 'upstreams.g.health_check.service'));
  const bad = loadConfigText(
    'upstreams: { g: { http_version: 3, servers: [127.0.0.1:9] } }\nlisteners: []\n',
    {},
  );
  assert.ok(
    !bad.ok && bad.issues.some((i) => i.path === 'upstreams.g.http_version' && /1\.1.*or 2/.test(i.message)),
  );
});

test("a client that leaves mid-upload: the server's stream is reset (CANCEL), never ended as a complete request", async () => {
  // Node's stream.close(code) ends the stream before it resets it: a chunked upload cut short
  // would reach the server as complete (END_STREAM: its 'end'), the reset coming after
  const seen: string[] = [];
  let received = 0;
  const server = h2server();
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.on('data', (d: Buffer) => {
      received += d.length;
    });
    stream.on('end', () => seen.push(`end ${received}${stream.aborted ? ' aborted' : ''}`));
    stream.on('close', () => seen.push(`close ${stream.rstCode}`));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(() => new Promise((r) => server.close(r)));
  const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
upstreams:
  app: { http_version: 2, servers: ['127.0.0.1:${(server.address() as AddressInfo).port}'] }
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, upstream: app }
`);
  try {
    const [host, p] = z.addr('web').split(':') as [string, string];
    const c = connect(Number(p), host);
    c.on('error', () => {});
    c.write(
      `POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n${'a'.repeat(4096)}\r\n`,
    );
    await until(() => received === 4096, 'the first chunk at the server');
    c.resetAndDestroy();
    await until(() => seen.some((s) => s.startsWith('close')), 'the server stream closed');
    assert.deepEqual(seen.at(-1), `close ${h2.NGHTTP2_CANCEL}`, seen.join(', '));
    assert.ok(!seen.includes('end 4096'), `never a complete request: ${seen.join(', ')}`);
    await until(() => z.access.length === 1, 'access line');
    assert.equal(z.access[0]?.status, 499);
  } finally {
    await z.stop();
  }
});
