/** `balance: hash` keys of HTTP requests (`hash_key`): header and cookie values, and the fallback. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hash32 } from '../../src/balancer/hash-fn.js';
import {
  cookieValue,
  findHeadEnd,
  parseRequestHead,
  type RequestHead,
} from '../../src/http/parser/request-head.js';
import { requestHash } from '../../src/http/retry-policy.js';
import type { Upstream } from '../../src/upstream/upstream.js';

function head(fields: string): RequestHead {
  const buf = Buffer.from(`GET /a/b HTTP/1.1\r\nHost: x\r\n${fields}\r\n`, 'latin1');
  return parseRequestHead(buf, findHeadEnd(buf, buf.length, 16384));
}

const upstream = (hashKey: string): Upstream =>
  ({ settings: { policy: 'hash', hashKey } }) as unknown as Upstream;
const CLIENT = 12345;

test('cookie values: by exact name, among several cookies and Cookie fields, trimmed', () => {
  const h = head('Cookie: theme=dark; sid=abc123;lang=fr\r\nCookie: other=1; SID=upper\r\n');
  assert.equal(cookieValue(h, 'sid'), 'abc123');
  assert.equal(cookieValue(h, 'lang'), 'fr');
  assert.equal(cookieValue(h, 'SID'), 'upper', 'names are case-sensitive');
  assert.equal(cookieValue(h, 'other'), '1');
  assert.equal(cookieValue(h, 'missing'), undefined);
  assert.equal(cookieValue(head('Cookie: sid\r\n'), 'sid'), undefined, 'a bare name has no value');
});

test('hash_key cookie:NAME and header:NAME hash the value; without it, the client address', () => {
  const withCookie = head('Cookie: sid=abc123\r\n');
  assert.equal(requestHash(upstream('cookie:sid'), CLIENT, withCookie, '/a/b'), hash32('abc123'));
  assert.equal(requestHash(upstream('cookie:sid'), CLIENT, head(''), '/a/b'), CLIENT);
  assert.equal(requestHash(upstream('header:x-user'), CLIENT, head('X-User: u7\r\n'), '/a/b'), hash32('u7'));
  // a missing header used to hash as '' (every such request on one server)
  assert.equal(requestHash(upstream('header:x-user'), CLIENT, head(''), '/a/b'), CLIENT);
  assert.equal(requestHash(upstream('path'), CLIENT, head(''), '/a/b'), hash32('/a/b'));
  assert.equal(requestHash(upstream('client_ip'), CLIENT, withCookie, '/a/b'), CLIENT);
});
