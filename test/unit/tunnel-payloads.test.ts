/**
 * The payload layouts of src/tunnel/PAYLOADS.md (HELLO, HELLO_ACK, addresses), the token proof,
 * the allow list, the relay score and NO_PROXY matching.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { encodeAddress, readAddress } from '../../src/tunnel/address.js';
import { AllowList, parseAllowEntry } from '../../src/tunnel/allow-list.js';
import { noProxy, proxyFor } from '../../src/tunnel/egress.js';
import {
  AuthLimiter,
  decodeHello,
  decodeHelloAck,
  encodeHello,
  encodeHelloAck,
  HELLO_ACK_SIZE,
  NonceCache,
  verifyProof,
} from '../../src/tunnel/handshake.js';
import { choose, SWITCH_MARGIN, scores } from '../../src/tunnel/score.js';
import { normalizeFingerprint } from '../../src/tunnel/tls.js';
import { ROOT } from '../helpers/zipline.js';

const DOC = readFileSync(join(ROOT, 'src/tunnel/PAYLOADS.md'), 'utf8');

/** The `| offset | size | field |` rows of the table under `## heading`. */
function table(heading: string): [string, number, string][] {
  const section = DOC.split('\n## ').find((s) => s.startsWith(heading)) ?? '';
  return [...section.matchAll(/^\| ([0-9L+]+) \| ([0-9L]+) \| ([^|]+) \|$/gm)].map((m) => [
    m[1] as string,
    Number.isNaN(Number(m[2])) ? -1 : Number(m[2]),
    (m[3] as string).trim(),
  ]);
}

describe('HELLO and HELLO_ACK layouts', () => {
  const binding = Buffer.alloc(32, 7);
  const hello = encodeHello(
    {
      agentId: 'desk-1',
      codecs: 1,
      want: 1,
      maxPayload: 16384,
      initialWindow: 262144,
      connectionWindow: 33554432,
    },
    'a-token-of-sixteen+',
    binding,
  );
  test('HELLO bytes sit where PAYLOADS.md says', () => {
    const L = 'desk-1'.length;
    const rows = table('HELLO (');
    assert.equal(rows.length, 11);
    // offsets as written in the doc, with L = the agent id length
    const num = (expr: string): number =>
      expr === 'L' ? L : Number(expr.replace('+L', '')) + (expr.endsWith('+L') ? L : 0);
    const offs = rows.map(([o]) => num(o));
    const sizes = rows.map(([, size]) => (size < 0 ? L : size));
    for (let i = 1; i < rows.length; i++)
      assert.equal(
        offs[i],
        (offs[i - 1] as number) + (sizes[i - 1] as number),
        `row ${i} follows row ${i - 1}`,
      );
    assert.equal((offs[10] as number) + (sizes[10] as number), hello.length, 'the proof ends the payload');
    const [version, idLen, id, codecs, want, maxPayload, win, connWin, ts, , proof] = offs as number[];
    assert.equal(hello[version as number], 1);
    assert.equal(hello[idLen as number], L);
    assert.equal(hello.toString('utf8', id, (id as number) + L), 'desk-1');
    assert.deepEqual([hello[codecs as number], hello[want as number]], [1, 1]);
    assert.equal(hello.readUInt32BE(maxPayload as number), 16384);
    assert.equal(hello.readUInt32BE(win as number), 262144);
    assert.equal(hello.readUInt32BE(connWin as number), 33554432);
    assert.ok(Math.abs(Number(hello.readBigUInt64BE(ts as number)) - Date.now()) < 5000);
    assert.equal(hello.length - (proof as number), 32);
    const d = decodeHello(hello);
    assert.ok(d);
    assert.equal(d.agentId, 'desk-1');
    assert.equal(d.connectionWindow, 33554432);
  });
  test('the proof holds for the right token and binding only', () => {
    const d = decodeHello(hello);
    assert.ok(d);
    assert.equal(verifyProof(['other-token-xxxxxxx', 'a-token-of-sixteen+'], binding, d), true);
    assert.equal(verifyProof(['other-token-xxxxxxx'], binding, d), false);
    assert.equal(verifyProof(['a-token-of-sixteen+'], Buffer.alloc(32, 8), d), false, 'another connection');
    const tampered = Buffer.from(hello);
    tampered[2] = 'D'.charCodeAt(0);
    const t = decodeHello(tampered);
    assert.ok(t);
    assert.equal(verifyProof(['a-token-of-sixteen+'], binding, t), false, 'a changed agent id');
    assert.equal(decodeHello(hello.subarray(0, hello.length - 1)), null, 'truncated');
  });
  test('HELLO_ACK bytes sit where PAYLOADS.md says', () => {
    const rows = table('HELLO_ACK');
    assert.equal(
      rows.reduce((n, [, size]) => n + size, 0),
      HELLO_ACK_SIZE,
    );
    const ack = encodeHelloAck({
      sessionId: Buffer.alloc(16, 9),
      codecs: 1,
      maxPayload: 8192,
      initialWindow: 65536,
      connectionWindow: 1 << 20,
      sessions: 3,
      streams: 7,
      loadPermille: 250,
    });
    assert.equal(ack.length, HELLO_ACK_SIZE);
    assert.deepEqual(
      [
        ack[0],
        ack[17],
        ack.readUInt32BE(18),
        ack.readUInt32BE(22),
        ack.readUInt32BE(26),
        ack.readUInt32BE(30),
        ack.readUInt32BE(34),
        ack.readUInt16BE(38),
      ],
      [1, 1, 8192, 65536, 1 << 20, 3, 7, 250],
    );
    assert.equal(decodeHelloAck(ack)?.streams, 7);
  });
  test('plain-TCP replay guard and the failed-auth limiter', () => {
    const n = new NonceCache();
    const nonce = Buffer.alloc(16, 1);
    assert.equal(n.accept(Date.now(), nonce), true);
    assert.equal(n.accept(Date.now(), nonce), false, 'the same nonce again');
    assert.equal(n.accept(Date.now() - 10 * 60_000, Buffer.alloc(16, 2)), false, 'too old');
    const l = new AuthLimiter(3, 1000);
    for (let i = 0; i < 3; i++) l.fail('10.0.0.1', 0);
    assert.equal(l.blocked('10.0.0.1', 10), true);
    assert.equal(l.blocked('10.0.0.2', 10), false);
    assert.equal(l.blocked('10.0.0.1', 2000), false, 'the window passed');
  });
});

describe('addresses, allow list, score, NO_PROXY, fingerprints', () => {
  test('addresses round-trip as SOCKS5 writes them; bad names are refused', () => {
    for (const [host, port] of [
      ['127.0.0.1', 80],
      ['::1', 443],
      ['fd00::1:2', 53],
      ['db.internal', 5432],
      ['::ffff:1.2.3.4', 1],
    ] as const) {
      const back = readAddress(encodeAddress({ host, port }), 0);
      assert.ok(back);
      assert.equal(back.dest.port, port);
      assert.equal(host.includes(':') ? back.dest.host.length > 0 : back.dest.host === host, true, host);
    }
    assert.equal(readAddress(encodeAddress({ host: '::1', port: 1 }), 0)?.dest.host, '::1');
    assert.deepEqual([...encodeAddress({ host: '10.1.2.3', port: 258 })], [1, 10, 1, 2, 3, 1, 2]);
    assert.equal(readAddress(Buffer.from([3, 3, 0x61, 0x2f, 0x62, 0, 80]), 0), null, 'a slash in a name');
    assert.equal(readAddress(Buffer.from([9, 0, 0]), 0), null, 'unknown type');
    assert.equal(readAddress(Buffer.from([1, 127, 0]), 0), null, 'truncated');
  });
  test('allow list: names, suffixes, CIDR blocks, port ranges; nothing else', () => {
    const a = new AllowList([
      '127.0.0.1:*',
      '10.0.0.0/8:5432',
      '*.internal:443',
      'db.example.com:8000-8099',
      '[fd00::/8]:53',
    ]);
    assert.equal(a.allowsAddress('127.0.0.1', 1), true);
    assert.equal(a.allowsAddress('::ffff:127.0.0.1', 22), true, 'IPv4-mapped');
    assert.equal(a.allowsAddress('127.0.0.2', 1), false);
    assert.equal(a.allowsAddress('10.9.9.9', 5432), true);
    assert.equal(a.allowsAddress('10.9.9.9', 5433), false);
    assert.equal(a.allowsAddress('fd12::1', 53), true);
    assert.equal(a.allowsName('api.internal', 443), true);
    assert.equal(a.allowsName('API.Internal', 443), true);
    assert.equal(a.allowsName('internal', 443), false, '*.internal needs a label before');
    assert.equal(a.allowsName('evilinternal', 443), false);
    assert.equal(a.allowsName('db.example.com', 8050), true);
    assert.equal(a.allowsName('db.example.com', 8100), false);
    for (const bad of ['*:*', '10.0.0.0/40:1', 'host:0', 'host:70000', 'host', 'a b:1', '[::1:80'])
      assert.equal(typeof parseAllowEntry(bad), 'string', bad);
  });
  test('score: 0.5 latency + 0.3 load + 0.2 instability, with hysteresis', () => {
    const now = 1_000_000;
    const [fast, slow] = scores(
      [
        { rttMs: 10, load: 0, failures: [] },
        { rttMs: 40, load: 0, failures: [] },
      ],
      now,
    );
    assert.equal(fast, 0.5 * 0.25);
    assert.equal(slow, 0.5);
    const [loaded] = scores(
      [
        { rttMs: 10, load: 1, failures: [now, now, now, now, now] },
        { rttMs: 10, load: 0, failures: [] },
      ],
      now,
    );
    assert.equal(loaded, 0.5 + 0.3 + 0.2);
    assert.equal(choose([0.3, 0.3 - SWITCH_MARGIN / 2], 0), 0, 'not better enough to switch');
    assert.equal(choose([0.3, 0.3 - SWITCH_MARGIN * 2], 0), 1);
    assert.equal(choose([Number.NaN, 0.9], 0), 1, 'the current one is down');
    assert.equal(choose([Number.NaN, Number.NaN], 0), -1);
  });
  test('NO_PROXY and HTTPS_PROXY', () => {
    assert.equal(noProxy('relay.corp', 7000, 'localhost,.corp'), true);
    assert.equal(noProxy('relay.corp', 7000, 'corp'), true);
    assert.equal(noProxy('relay.example', 7000, 'corp,*.internal'), false);
    assert.equal(noProxy('relay.example', 7000, '*'), true);
    assert.equal(noProxy('relay.example', 7000, 'relay.example:7001'), false);
    assert.equal(noProxy('relay.example', 7000, 'relay.example:7000'), true);
    assert.equal(
      proxyFor('r', 1, undefined, { HTTPS_PROXY: 'http://u:p%40ss@proxy:3128' })?.password,
      'p@ss',
    );
    assert.equal(proxyFor('r', 1, '', { HTTPS_PROXY: 'http://proxy:3128' }), null, '"" means direct');
    assert.equal(proxyFor('r', 1, 'socks5://s:1080', { NO_PROXY: 'r' }), null);
    assert.equal(proxyFor('r', 1, 'socks5://s:1080', {})?.kind, 'socks5');
  });
  test('fingerprints: openssl style, case and colons ignored', () => {
    const hex = 'ab'.repeat(32);
    assert.equal(normalizeFingerprint(`sha256:${hex}`), hex);
    assert.equal(normalizeFingerprint(`SHA256:${hex.toUpperCase().match(/../g)?.join(':')}`), hex);
    assert.equal(normalizeFingerprint('sha256:abc'), null);
  });
});

test('DATA payloads we send fill whole TLS records (frame = k × 16 KiB)', async () => {
  const { recordAligned } = await import('../../src/tunnel/frame.js');
  assert.equal(recordAligned(16 * 1024), 16 * 1024 - 16);
  assert.equal(recordAligned(64 * 1024), 64 * 1024 - 16);
  assert.equal(recordAligned(20_000), 16 * 1024 - 16);
  assert.equal(recordAligned(4096), 4096, 'below one record: as negotiated');
});
