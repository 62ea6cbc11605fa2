/** `real_ip_header`: who the client is behind trusted HTTP proxies (nginx real_ip_recursive on). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addressList } from '../../src/config/address-list.js';
import { findHeadEnd, parseRequestHead } from '../../src/http/parser/request-head.js';
import { type RealIpHeader, realIpWarning, requestClientIp } from '../../src/http/real-ip.js';

const trusted = addressList(['10.0.0.0/8', '127.0.0.1', 'fd00::/8']);
const head = (fields: string) => {
  const buf = Buffer.from(`GET / HTTP/1.1\r\nHost: a\r\n${fields}\r\n`, 'latin1');
  return parseRequestHead(buf, findHeadEnd(buf, buf.length, 65536));
};
const viaLb = { clientIp: '127.0.0.1', trusted: true };
const ip = (h: RealIpHeader | null, fields: string, down = viaLb) =>
  requestClientIp(h, trusted, head(fields), down);

test('X-Forwarded-For is read right to left, skipping trusted proxies', () => {
  const xff = 'x-forwarded-for';
  assert.equal(ip(xff, 'X-Forwarded-For: 203.0.113.9\r\n'), '203.0.113.9');
  assert.equal(ip(xff, 'X-Forwarded-For: 198.51.100.1, 203.0.113.9, 10.1.1.1\r\n'), '203.0.113.9');
  // several fields are one list, in order
  assert.equal(
    ip(xff, 'X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 10.2.2.2, 10.1.1.1\r\n'),
    '203.0.113.9',
  );
  assert.equal(ip(xff, 'X-Forwarded-For: 2001:db8::5, fd00::1\r\n'), '2001:db8::5');
  // all trusted: the leftmost
  assert.equal(ip(xff, 'X-Forwarded-For: 10.3.3.3, 10.1.1.1\r\n'), '10.3.3.3');
  // junk stops the walk: the last address before it stands
  assert.equal(ip(xff, 'X-Forwarded-For: evil.example, 10.1.1.1\r\n'), '10.1.1.1');
  assert.equal(ip(xff, 'X-Forwarded-For: 203.0.113.9, junk\r\n'), '127.0.0.1');
  assert.equal(
    ip(xff, 'X-Forwarded-For: 1.2.3.4:5678\r\n'),
    '127.0.0.1',
    'an address with a port is not one',
  );
  assert.equal(ip(xff, ''), '127.0.0.1', 'no header: the connection');
});

test('X-Real-IP: its value when it is an address; untrusted peers and no setting keep the connection', () => {
  assert.equal(ip('x-real-ip', 'X-Real-IP: 203.0.113.9\r\n'), '203.0.113.9');
  assert.equal(ip('x-real-ip', 'X-Real-IP: nope\r\n'), '127.0.0.1');
  const direct = { clientIp: '192.0.2.50', trusted: false };
  assert.equal(ip('x-forwarded-for', 'X-Forwarded-For: 203.0.113.9\r\n', direct), '192.0.2.50');
  assert.equal(ip(null, 'X-Forwarded-For: 203.0.113.9\r\n'), '127.0.0.1');
});

test('a /0 block in trusted_proxies on a listener reachable beyond this host is warned about', () => {
  const everyone = ['10.0.0.0/8', '0.0.0.0/0'];
  assert.match(
    realIpWarning('0.0.0.0', everyone, 'x-forwarded-for') ?? '',
    /every client can name its own address/,
  );
  assert.match(realIpWarning('::', ['::/0'], 'x-real-ip') ?? '', /every client/);
  assert.match(realIpWarning('192.0.2.7', everyone, 'x-real-ip') ?? '', /every client/);
  assert.equal(realIpWarning('127.0.0.1', everyone, 'x-forwarded-for'), null, 'loopback only');
  assert.equal(realIpWarning('localhost', everyone, 'x-forwarded-for'), null);
  assert.equal(realIpWarning('0.0.0.0', everyone, undefined), null, 'no real_ip_header: nothing believed');
  assert.equal(realIpWarning('0.0.0.0', ['10.0.0.0/8', '192.168.0.0/16'], 'x-forwarded-for'), null);
});
