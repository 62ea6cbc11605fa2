/**
 * Request path normalisation (src/http/request-path.ts): what routing and the upstream see.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { requestPath } from '../../src/http/request-path.js';

test('dot segments are resolved; a `..` above the root is refused (null → 400)', () => {
  const cases: [string, string | null][] = [
    ['/a/b/../c', '/a/c'],
    ['/public/../admin', '/admin'],
    ['/a/./b', '/a/b'],
    ['/a/b/..', '/a/'],
    ['/a/b/.', '/a/b/'],
    ['/a/..', '/'],
    ['/.', '/'],
    ['/..', null],
    ['/a/../../b', null],
    ['/../', null],
    ['/a/..b/.c/c.', '/a/..b/.c/c.'], // dots inside names are names
    ['/a/%2e%2E/b', '/b'], // percent-encoded dots are dots
    ['/%2e%2e/etc/passwd', null],
    ['/a/.%2e/.%2E/x', null],
  ];
  for (const [path, want] of cases) assert.equal(requestPath(path, true), want, path);
});

test('unreserved escapes are decoded; others stay as sent', () => {
  assert.equal(requestPath('/%61dmin', true), '/admin');
  assert.equal(requestPath('/%41%7E%2D%5F%30', true), '/A~-_0');
  assert.equal(requestPath('/a%2Fb%20c%C3%A9', true), '/a%2Fb%20c%C3%A9');
  assert.equal(
    requestPath('/a%252e%252e/x', true),
    '/a%252e%252e/x',
    '%25 is not decoded, so no double decoding',
  );
  assert.equal(requestPath('/a%2/%zz%', true), '/a%2/%zz%', 'malformed escapes pass');
  assert.equal(requestPath('/x/..%2F..%2Fadmin', true), '/x/..%2F..%2Fadmin', '%2F is not a separator');
});

test('slashes merge unless merge_slashes is off; the query is never touched', () => {
  assert.equal(requestPath('//admin', true), '/admin');
  assert.equal(requestPath('/a//b///c/', true), '/a/b/c/');
  assert.equal(requestPath('//', true), '/');
  assert.equal(requestPath('/a//..', true), '/', 'merged before resolving, as nginx');
  assert.equal(requestPath('//admin', false), '//admin');
  assert.equal(requestPath('/a//..', false), '/a/');
  assert.equal(requestPath('/a/../b?x=/../y&z=%61//', true), '/b?x=/../y&z=%61//');
  assert.equal(requestPath('/p?q=1//2', true), '/p?q=1//2');
});

test('absolute-form targets are reduced to their path; `*` and plain paths come back unchanged', () => {
  assert.equal(requestPath('http://h.test/a/../b?x', true), '/b?x');
  assert.equal(requestPath('http://h.test', true), '/');
  assert.equal(requestPath('*', true), '*');
  const plain = '/static/app.js?v=3';
  assert.equal(requestPath(plain, true), plain);
});
