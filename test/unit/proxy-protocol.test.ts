/**
 * The PROXY protocol header (src/proxy-protocol/header.ts) against HAProxy's spec
 * (doc/proxy-protocol.txt): the wire constants, the longest v1 lines, v2 with TLVs, every split
 * point, what is refused, and what zipline sends (`send_proxy`, health checks).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadConfigText } from '../../src/config/load.js';
import {
  buildProxyHeader,
  ipv6,
  ipv6Bytes,
  localProxyHeader,
  type ParseResult,
  parseProxyHeader,
  V2_SIGNATURE,
} from '../../src/proxy-protocol/header.js';

const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');

function done(r: ParseResult): Extract<ParseResult, { kind: 'done' }> {
  assert.equal(r.kind, 'done', JSON.stringify(r));
  return r as Extract<ParseResult, { kind: 'done' }>;
}

function refused(buf: Buffer): string {
  const r = parseProxyHeader(buf);
  assert.equal(r.kind, 'error', `${JSON.stringify(buf.toString('latin1'))} → ${JSON.stringify(r)}`);
  return (r as { reason: string }).reason;
}

/** A v2 header: command, family, addresses and TLVs as given. */
function v2(cmd: number, family: number, body: Buffer): Buffer {
  const fixed = Buffer.alloc(16);
  V2_SIGNATURE.copy(fixed);
  fixed[12] = cmd;
  fixed[13] = family;
  fixed.writeUInt16BE(body.length, 14);
  return Buffer.concat([fixed, body]);
}

describe('PROXY protocol header', () => {
  test('wire constants (spec §2.2): the v2 signature and the LOCAL / UNKNOWN headers zipline sends', () => {
    assert.deepEqual(
      [...V2_SIGNATURE],
      [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a],
    );
    assert.equal(localProxyHeader(2).toString('hex'), '0d0a0d0a000d0a515549540a20000000');
    assert.equal(localProxyHeader(1).toString('latin1'), 'PROXY UNKNOWN\r\n');
  });

  test('v1: TCP4, TCP6 and UNKNOWN, up to the longest line (107 bytes), the bytes after it left alone', () => {
    const four = latin1('PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\nGET /');
    const r4 = done(parseProxyHeader(four));
    assert.deepEqual([r4.version, r4.length], [1, four.length - 5]);
    assert.deepEqual(r4.source, { ip: '255.255.255.255', port: 65535 });
    const ffff = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const six = latin1(`PROXY TCP6 ${ffff} ${ffff} 65535 65535\r\n`);
    assert.equal(six.length, 104); // the spec's worst case for TCP6
    assert.deepEqual(done(parseProxyHeader(six)).destination, { ip: ffff, port: 65535 });
    const short6 = done(parseProxyHeader(latin1('PROXY TCP6 2001:db8::7 ::1 0 443\r\n')));
    assert.deepEqual(
      [short6.source, short6.destination],
      [
        { ip: '2001:db8::7', port: 0 },
        { ip: '::1', port: 443 },
      ],
    );
    const unknown = latin1(`PROXY UNKNOWN ${'x'.repeat(107 - 16)}\r\n`);
    assert.equal(unknown.length, 107);
    const u = done(parseProxyHeader(unknown));
    assert.deepEqual([u.source, u.destination, u.length], [null, null, 107]);
  });

  test('every split point: more bytes wanted until the header is whole, then the same result', () => {
    const headers = [
      latin1('PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\n'),
      buildProxyHeader(2, { ip: '2001:db8::7', port: 5555 }, { ip: '2001:db8::1', port: 443 }),
      v2(
        0x21,
        0x11,
        Buffer.concat([
          Buffer.from([203, 0, 113, 7, 192, 0, 2, 1, 0x15, 0xb3, 1, 0xbb]),
          Buffer.from([0x04, 0x00, 0x03, 1, 2, 3]),
        ]),
      ),
    ];
    for (const h of headers) {
      const whole = done(parseProxyHeader(Buffer.concat([h, latin1('rest')])));
      assert.equal(whole.length, h.length);
      for (let cut = 0; cut < h.length; cut++) {
        assert.equal(parseProxyHeader(h.subarray(0, cut)).kind, 'more', `cut at ${cut} of ${h.length}`);
      }
    }
  });

  test("v2: TCP over IPv4 and IPv6 with TLVs after the addresses; LOCAL, UNSPEC, UNIX and UDP keep the connection's addresses", () => {
    const tlv = Buffer.from([0x05, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]); // PP2_TYPE_UNIQUE_ID
    const four = v2(
      0x21,
      0x11,
      Buffer.concat([Buffer.from([10, 1, 2, 3, 172, 16, 0, 9, 0x30, 0x39, 0x00, 0x50]), tlv]),
    );
    const r4 = done(parseProxyHeader(Buffer.concat([four, latin1('GET')])));
    assert.deepEqual([r4.version, r4.length], [2, 16 + 12 + tlv.length]);
    assert.deepEqual(
      [r4.source, r4.destination],
      [
        { ip: '10.1.2.3', port: 12345 },
        { ip: '172.16.0.9', port: 80 },
      ],
    );
    const addrs = Buffer.concat([
      ipv6Bytes('2001:db8::7'),
      ipv6Bytes('::ffff:192.0.2.1'),
      Buffer.from([0, 1, 0, 2]),
    ]);
    const r6 = done(parseProxyHeader(v2(0x21, 0x21, addrs)));
    assert.deepEqual(
      [r6.source, r6.destination],
      [
        { ip: '2001:db8::7', port: 1 },
        { ip: '::ffff:192.0.2.1', port: 2 },
      ],
    );
    for (const [cmd, family] of [
      [0x20, 0x11], // LOCAL (a balancer's own health check), addresses ignored
      [0x21, 0x00], // UNSPEC
      [0x21, 0x31], // UNIX stream
      [0x21, 0x12], // UDP over IPv4
    ] as const) {
      const r = done(parseProxyHeader(v2(cmd, family, Buffer.alloc(cmd === 0x20 ? 12 : 216))));
      assert.deepEqual([r.source, r.destination], [null, null], `cmd ${cmd} family ${family}`);
    }
  });

  test('refused: other protocols, malformed v1 lines, bad v2 versions, families, lengths', () => {
    assert.match(refused(latin1('GET / HTTP/1.1\r\n')), /not a PROXY/);
    assert.match(refused(latin1('\x16\x03\x01')), /not a PROXY/); // a TLS ClientHello
    assert.match(refused(latin1('PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n')), /TCP4\|TCP6/);
    assert.match(refused(latin1('PROXY TCP4 1.2.3.4  5.6.7.8 80 443\r\n')), /TCP4\|TCP6/);
    assert.match(refused(latin1('PROXY TCP4 1.2.3.4 5.6.7.8 65536 443\r\n')), /port/);
    assert.match(refused(latin1('PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n')), /port/);
    assert.match(refused(latin1('PROXY TCP4 1.2.3.4 5.6.7.8 -1 443\r\n')), /port/);
    assert.match(refused(latin1('PROXY TCP4 ::1 5.6.7.8 80 443\r\n')), /IPv4/);
    assert.match(refused(latin1('PROXY TCP6 1.2.3.4 ::1 80 443\r\n')), /IPv6/);
    assert.match(refused(latin1('PROXY TCP4 1.2.3.400 5.6.7.8 80 443\r\n')), /IPv4/);
    assert.match(refused(latin1('PROXY UDP4 1.2.3.4 5.6.7.8 80 443\r\n')), /unknown protocol/);
    assert.match(refused(latin1('proxy TCP4 1.2.3.4 5.6.7.8 80 443\r\n')), /not a PROXY/);
    assert.match(refused(latin1(`PROXY UNKNOWN ${'x'.repeat(100)}`)), /107/); // no CRLF within 107 bytes
    assert.match(refused(v2(0x11, 0x11, Buffer.alloc(12))), /version/); // version 1 in a v2 header
    assert.match(refused(v2(0x22, 0x11, Buffer.alloc(12))), /version/); // command 2
    assert.match(refused(v2(0x21, 0x11, Buffer.alloc(8))), /12 bytes/);
    assert.match(refused(v2(0x21, 0x21, Buffer.alloc(20))), /36 bytes/);
    assert.match(refused(v2(0x21, 0x41, Buffer.alloc(12))), /family/);
    const huge = v2(0x21, 0x11, Buffer.alloc(0));
    huge.writeUInt16BE(0xffff, 14);
    assert.match(refused(huge), /at most/); // refused from the fixed part, not after 64 KiB
    assert.match(
      refused(Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0b])),
      /not a PROXY/,
    );
  });

  test('what zipline sends (`send_proxy`): v1 and v2 for IPv4, IPv6 and mixed families, read back exactly', () => {
    const cases: [{ ip: string; port: number }, { ip: string; port: number }, string][] = [
      [{ ip: '203.0.113.7', port: 5555 }, { ip: '192.0.2.1', port: 443 }, 'TCP4'],
      [{ ip: '2001:db8::7', port: 1 }, { ip: '2001:db8::1', port: 65535 }, 'TCP6'],
      [{ ip: '203.0.113.7', port: 5555 }, { ip: '::1', port: 80 }, 'TCP6'], // IPv4 mapped to pair with IPv6
    ];
    for (const [src, dst, proto] of cases) {
      const one = buildProxyHeader(1, src, dst);
      assert.ok(one.toString('latin1').startsWith(`PROXY ${proto} `));
      const mapped = (a: { ip: string; port: number }) =>
        proto === 'TCP6' && !a.ip.includes(':') ? { ip: `::ffff:${a.ip}`, port: a.port } : a;
      for (const h of [one, buildProxyHeader(2, src, dst)]) {
        const r = done(parseProxyHeader(h));
        assert.equal(r.length, h.length);
        assert.deepEqual([r.source, r.destination], [mapped(src), mapped(dst)]);
      }
    }
    assert.equal(
      buildProxyHeader(2, { ip: '10.1.2.3', port: 12345 }, { ip: '172.16.0.9', port: 80 }).toString('hex'),
      '0d0a0d0a000d0a515549540a2111000c0a010203ac1000093039' + '0050',
    );
  });

  test('IPv6 text as Node prints it (RFC 5952)', () => {
    for (const ip of [
      '::',
      '::1',
      '2001:db8::1',
      'fe80::1:0:0:1',
      '1:0:0:1::1',
      '1::1:0:0:1',
      '2001:db8:0:1:1:1:1:1',
      '::ffff:1.2.3.4',
      'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
    ]) {
      assert.equal(ipv6(ipv6Bytes(ip), 0), ip);
    }
    assert.equal(ipv6(ipv6Bytes('2001:0db8:0000:0000:0000:0000:0000:0001'), 0), '2001:db8::1');
  });
});

describe('PROXY protocol config', () => {
  const base = (upstream: string, listener: string) => `
upstreams:
  u: { servers: [127.0.0.1:1], ${upstream} }
listeners:
  - { name: l, ${listener}, listen: 127.0.0.1:0, upstream: u }
`;
  const issues = (yaml: string): string[] => {
    const r = loadConfigText(yaml, {});
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };

  test('send_proxy is for tcp listeners (with or without tls); proxy_protocol needs its peers', () => {
    assert.deepEqual(
      issues(base('send_proxy: v2', 'protocol: tcp, proxy_protocol: { from: [10.0.0.0/8] }')),
      [],
    );
    assert.match(
      issues(base('send_proxy: v1', 'protocol: http')).join('\n'),
      /send_proxy.*tcp listeners only/,
    );
    assert.match(
      issues(base('send_proxy: v1', 'protocol: udp')).join('\n'),
      /send_proxy.*tcp listeners only/,
    );
    assert.deepEqual(issues(base('send_proxy: v1, tls: true', 'protocol: tcp')), []); // header, then TLS
    assert.match(issues(base('send_proxy: v3', 'protocol: tcp')).join('\n'), /send_proxy/);
    assert.match(
      issues(base('', 'protocol: http, proxy_protocol: { from: [] }')).join('\n'),
      /load balancers/,
    );
    assert.match(
      issues(base('', 'protocol: udp, proxy_protocol: { from: [10.0.0.1] }')).join('\n'),
      /proxy_protocol/,
    );
    assert.match(issues(base('', 'protocol: tcp, proxy_protocol: { from: [nope] }')).join('\n'), /CIDR/);
  });
});
