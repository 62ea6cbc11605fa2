/** Upstream response heads: status line, body delimitation (RFC 9112 §6.3), refusals → 502. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isZiplineError } from '../../src/errors.js';
import { findHeadEnd } from '../../src/http/parser/request-head.js';
import { parseResponseHead, type ResponseHead } from '../../src/http/parser/response-head.js';

function parse(text: string, method = 'GET'): ResponseHead {
  const buf = Buffer.from(text, 'latin1');
  const end = findHeadEnd(buf, buf.length, 16 * 1024);
  assert.ok(end > 0);
  return parseResponseHead(buf, end, method);
}

function refused(text: string, method = 'GET'): void {
  assert.throws(
    () => parse(text, method),
    (e: unknown) => isZiplineError(e) && e.code === 'ZL_UPSTREAM_BAD_RESPONSE' && e.status === 502,
    JSON.stringify(text),
  );
}

describe('response head', () => {
  test('status line and fields', () => {
    const r = parse(
      'HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nabc',
    );
    assert.equal(r.status, 404);
    assert.equal(r.reason, 'Not Found');
    assert.equal(r.fieldCount, 3, 'repeated fields are kept');
    assert.equal(r.body, 'length');
    assert.equal(r.contentLength, 3);
    assert.equal(r.keepAlive, true);
    assert.equal(
      parse('HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n').reason,
      '',
      'reason phrase may be absent',
    );
  });

  test('body delimitation follows RFC 9112 §6.3', () => {
    assert.equal(parse('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n', 'HEAD').body, 'none');
    assert.equal(parse('HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n').body, 'none');
    assert.equal(parse('HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n').body, 'none');
    assert.equal(parse('HTTP/1.1 100 Continue\r\n\r\n').body, 'none');
    assert.equal(
      parse('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n').body,
      'none',
    );
    assert.equal(parse('HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n').body, 'chunked');
    assert.equal(parse('HTTP/1.1 200 OK\r\nTransfer-Encoding: ,chunked\r\n\r\n').body, 'chunked');
    const noLength = parse('HTTP/1.1 200 OK\r\n\r\n');
    assert.equal(noLength.body, 'close');
    assert.equal(noLength.keepAlive, false);
    assert.equal(parse('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n').keepAlive, false);
    assert.equal(parse('HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n').keepAlive, false);
    assert.equal(
      parse('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n').keepAlive,
      true,
    );
  });

  test('malformed or ambiguous heads are 502 (ZL_UPSTREAM_BAD_RESPONSE)', () => {
    refused('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n');
    refused('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n');
    refused('HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n');
    refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n');
    // codings other than chunked: the client would get a coded body presented as plain (nginx: 502)
    refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n');
    refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n');
    refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n');
    refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n');
    refused('HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
    refused('HTTP/1.1 20 OK\r\n\r\n');
    refused('HTTP/1.1 099 Low\r\n\r\n');
    refused('HTTP/2 200 OK\r\n\r\n');
    refused('ICY 200 OK\r\n\r\n');
    refused('HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n');
    refused('HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n');
  });
});
