/** Route table and the upstream request head: routing, forwarding headers, hop-by-hop removal. */
import assert from 'node:assert/strict';
import { BlockList } from 'node:net';
import { describe, test } from 'node:test';
import { listed } from '../../src/config/address-list.js';
import { buildForwardHead, type ForwardContext } from '../../src/http/forward-head.js';
import { KNOWN_NAMES } from '../../src/http/parser/names.js';
import { findHeadEnd, parseRequestHead, type RequestHead } from '../../src/http/parser/request-head.js';
import { nextRequestId } from '../../src/http/request-id.js';
import { pathOf, RouteTable } from '../../src/http/route-table.js';

describe('route table', () => {
  const table = new RouteTable([
    { host: 'api.example.com', pathPrefix: '/v1/', value: 'api-v1', stripPrefix: true },
    { host: 'api.example.com', pathPrefix: '/', value: 'api' },
    { host: '*.example.com', value: 'wild' },
    { host: '*.eu.example.com', value: 'wild-eu' },
    { pathPrefix: '/static/', value: 'static' },
    { pathPrefix: '/', value: 'default' },
  ]);
  const m = (host: string | null, target: string): [string | undefined, string | undefined] => {
    const r = table.match(host, target);
    return [r?.route.value, r?.path];
  };

  test('exact host, longest prefix, strip_prefix keeps a leading slash and the query', () => {
    assert.deepEqual(m('api.example.com', '/v1/users?x=1'), ['api-v1', '/users?x=1']);
    assert.deepEqual(m('API.Example.com:8443', '/v1/'), ['api-v1', '/']);
    // a fully qualified name (root dot) is the same host, port or not, wildcards too
    assert.deepEqual(m('api.example.com.', '/v1/'), ['api-v1', '/']);
    assert.deepEqual(m('api.example.com.:80', '/v2'), ['api', '/v2']);
    assert.deepEqual(m('a.example.com.', '/x'), ['wild', '/x']);
    assert.deepEqual(m('api.example.com', '/v2/users'), ['api', '/v2/users']);
  });
  test('wildcards: most specific suffix; never the bare domain', () => {
    assert.deepEqual(m('a.example.com', '/x'), ['wild', '/x']);
    assert.deepEqual(m('a.b.eu.example.com', '/x'), ['wild-eu', '/x']);
    assert.deepEqual(m('example.com', '/x'), ['default', '/x']);
  });
  test('host-less routes catch the rest; no match at all is null (→ 404)', () => {
    assert.deepEqual(m('other.org', '/static/a.css'), ['static', '/static/a.css']);
    assert.deepEqual(m(null, '/'), ['default', '/']);
    assert.equal(new RouteTable([{ host: 'a', pathPrefix: '/x', value: 1 }]).match('b', '/x'), null);
  });
  test('conditional routes: tried first at their prefix length, taken only when the test holds', () => {
    const t = new RouteTable([
      { pathPrefix: '/a', value: 'plain' },
      { pathPrefix: '/a', value: 'beta', conditional: true },
      { pathPrefix: '/', value: 'root-cond', conditional: true },
    ]);
    const want = (v: string, ctx: string) => v === ctx;
    assert.equal(t.match(null, '/a/1', 'beta', want)?.route.value, 'beta');
    assert.equal(t.match(null, '/a/1', 'other', want)?.route.value, 'plain');
    assert.equal(t.match(null, '/a/1')?.route.value, 'plain', 'no test: conditional routes never match');
    assert.equal(t.match(null, '/b', 'root-cond', want)?.route.value, 'root-cond');
    assert.equal(t.match(null, '/b', 'x', want), null);
  });
  test('absolute-form targets are routed by their path', () => {
    assert.equal(pathOf('http://h.example/p/q?x=1'), '/p/q?x=1');
    assert.equal(pathOf('http://h.example'), '/');
    assert.equal(pathOf('http://h.example?x=1'), '/?x=1');
    assert.equal(pathOf('*'), '*');
  });
});

function head(text: string): RequestHead {
  const buf = Buffer.from(text, 'latin1');
  return parseRequestHead(buf, findHeadEnd(buf, buf.length, 16384));
}

const trustedProxies = new BlockList();
trustedProxies.addSubnet('10.0.0.0', 8);

function ctx(over: Partial<ForwardContext> = {}): ForwardContext {
  const clientIp = over.clientIp ?? '192.0.2.7';
  return {
    clientIp,
    realIp: over.realIp ?? clientIp,
    proto: 'http',
    trusted: listed(trustedProxies, clientIp),
    path: '/p',
    rules: { remove: new Set(['x-debug']), set: new Map([['X-Env', 'prod']]), setNames: new Set(['x-env']) },
    ...over,
  };
}

describe('upstream request head', () => {
  const req = head(
    [
      'POST /orig HTTP/1.1',
      'Host: Api.Example.com',
      'Connection: keep-alive, X-Secret',
      'Keep-Alive: timeout=5',
      'X-Secret: drop me',
      'TE: trailers',
      'Proxy-Authorization: Basic xyz',
      'Cookie: a=1',
      'Cookie: b=2',
      'X-Debug: 1',
      'X-Env: dev',
      'X-Forwarded-For: 198.51.100.1',
      'X-Real-IP: 198.51.100.1',
      'X-Request-Id: abc-123',
      'Transfer-Encoding: chunked',
      'My-Header: v',
      '',
      '',
    ].join('\r\n'),
  );

  test('hop-by-hop (and Connection-named) fields are dropped; Host, order, case and repeats kept', () => {
    const { head: out } = buildForwardHead(req, ctx());
    const lines = out.split('\r\n');
    assert.equal(lines[0], 'POST /p HTTP/1.1');
    assert.equal(lines[1], 'Host: Api.Example.com');
    for (const gone of [
      'Connection: keep',
      'Keep-Alive',
      'X-Secret',
      'TE:',
      'Proxy-Authorization',
      'X-Debug',
      'X-Env: dev',
    ]) {
      assert.ok(!out.includes(gone), `${gone} must not be forwarded`);
    }
    assert.deepEqual(
      lines.filter((l) => l.startsWith('Cookie')),
      ['Cookie: a=1', 'Cookie: b=2'],
    );
    assert.ok(lines.includes('My-Header: v'));
    assert.ok(lines.includes('X-Env: prod'), 'route rule set replaces');
    assert.ok(lines.includes('Transfer-Encoding: chunked'), 'framing re-declared');
    assert.ok(out.endsWith('\r\n\r\n'));
  });

  test('every field name zipline recognises is forwarded in place unless hop-by-hop or rewritten', () => {
    // fields zipline drops or writes itself; any other recognised name (one added for the access
    // log, say) must reach the upstream as sent, like an unrecognised one
    const notAsSent = new Set([
      'content-length', // framing: re-declared after the forwarding fields
      'transfer-encoding',
      'connection',
      'keep-alive',
      'proxy-connection',
      'te',
      'trailer',
      'upgrade',
      'proxy-authorization',
      'expect', // 100-continue is answered by zipline
      'x-forwarded-for',
      'x-forwarded-proto',
      'x-forwarded-host',
      'x-real-ip',
      'x-request-id',
    ]);
    const VALID: Record<string, string> = {
      'content-length': '0',
      'transfer-encoding': 'chunked',
      host: 'h.test',
      'retry-after': '1',
    };
    for (const [name] of KNOWN_NAMES) {
      const value = VALID[name] ?? `v-${name}`;
      const line = `${name.replace(/(^|-)[a-z]/g, (c) => c.toUpperCase())}: ${value}`;
      const extra = name === 'expect' ? 'Expect: 100-continue' : line;
      const text = `GET /x HTTP/1.1\r\n${name === 'host' ? '' : 'Host: h.test\r\n'}${extra}\r\n\r\n`;
      const out = buildForwardHead(head(text), ctx()).head;
      // kept fields stay where they were: before the forwarding fields zipline appends
      const inPlace = out.includes(`\r\n${extra}\r\nX-Forwarded-For: `);
      assert.equal(inPlace, !notAsSent.has(name), `${name}: ${out}`);
    }
  });

  test('forwarding headers from an untrusted client are replaced', () => {
    const { head: out, requestId } = buildForwardHead(req, ctx());
    assert.ok(out.includes('X-Forwarded-For: 192.0.2.7\r\n'));
    assert.ok(out.includes('X-Real-IP: 192.0.2.7\r\n'));
    assert.ok(out.includes('X-Forwarded-Proto: http\r\n'));
    assert.ok(out.includes('X-Forwarded-Host: Api.Example.com\r\n'));
    assert.equal(requestId, 'abc-123', 'a well-formed request id is propagated');
    assert.equal(out.split('X-Forwarded-For').length, 2, 'exactly one X-Forwarded-For');
  });

  test('forwarding headers from a trusted proxy are kept, XFF appended to', () => {
    const { head: out } = buildForwardHead(req, ctx({ clientIp: '10.1.2.3', proto: 'https' }));
    assert.ok(out.includes('X-Forwarded-For: 198.51.100.1, 10.1.2.3\r\n'));
    assert.ok(out.includes('X-Real-IP: 198.51.100.1\r\n'));
  });

  test('an IPv4 client seen on a dual-stack socket (::ffff:a.b.c.d) is matched as IPv4', () => {
    const { head: out } = buildForwardHead(req, ctx({ clientIp: '::ffff:10.9.9.9' }));
    assert.ok(out.includes('X-Forwarded-For: 198.51.100.1, ::ffff:10.9.9.9\r\n'));
  });

  test('request ids are generated when absent or malformed; Content-Length and upgrades re-declared', () => {
    const plain = head('GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: bad id\r\nContent-Length: 0\r\n\r\n');
    const r = buildForwardHead(plain, ctx());
    assert.match(r.requestId, /^[0-9a-f]{32}$/);
    const a = nextRequestId();
    const b = nextRequestId();
    assert.notEqual(a, b);
    assert.equal(a.slice(0, 16), b.slice(0, 16), 'one random prefix per process');
    assert.ok(r.head.includes('Content-Length: 0\r\n'));
    const ws = head(
      'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n',
    );
    const w = buildForwardHead(ws, ctx()).head;
    assert.ok(w.includes('Connection: upgrade\r\nUpgrade: websocket\r\n'));
    assert.ok(w.includes('Sec-WebSocket-Key: k\r\n'));
  });
});
