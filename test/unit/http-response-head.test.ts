/** Upstream response heads: status line, body delimitation (RFC 9112 §6.3), refusals → 502. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isZiplineError } from '../../src/errors.js';
import { findHeadEnd } from '../../src/http/parser/request-head.js';
import { parseResponseHead, type ResponseHead } from '../../src/http/parser/response-head.js';

function parseOnce(text: string, method: string): ResponseHead {
  const buf = Buffer.from(text, 'latin1');
  const end = findHeadEnd(buf, buf.length, 16 * 1024);
  assert.ok(end > 0);
  return parseResponseHead(buf, end, method);
}

/** `text` with a long field after its status line (findHeadEnd's `indexOf` path past 96 bytes). */
function padded(text: string): string {
  const nl = text.indexOf('\n') + 1;
  return `${text.slice(0, nl)}X-Pad: ${'p'.repeat(120)}\r\n${text.slice(nl)}`;
}

/** Parses `text`, and checks that its padded form means the same response. */
function parse(text: string, method = 'GET'): ResponseHead {
  const r = parseOnce(text, method);
  const p = parseOnce(padded(text), method);
  const keys = ['status', 'reason', 'minor', 'body', 'contentLength', 'keepAlive', 'connection'] as const;
  for (const k of keys) assert.equal(p[k], r[k], `padded ${JSON.stringify(text)}: ${k}`);
  assert.equal(p.headEnd, r.headEnd + padded(text).length - text.length, 'the body starts as far on');
  return r;
}

function refused(text: string, method = 'GET'): void {
  for (const t of [text, padded(text)]) {
    assert.throws(
      () => parseOnce(t, method),
      (e: unknown) => isZiplineError(e) && e.code === 'ZL_UPSTREAM_BAD_RESPONSE' && e.status === 502,
      JSON.stringify(t),
    );
  }
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
    // where the fields frame nothing (HEAD, 204, 304) they are still checked, as nginx does
    refused('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n', 'HEAD');
    refused('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n', 'HEAD');
    refused('HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n');
    refused('HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: gzip\r\n\r\n');
    refused('HTTP/1.1 20 OK\r\n\r\n');
    refused('HTTP/1.1 099 Low\r\n\r\n');
    // RFC 9110 §15: outside 100–599 is invalid (HTTP/2 cannot even carry it)
    refused('HTTP/1.1 600 High\r\n\r\n');
    refused('HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n');
    refused('HTTP/2 200 OK\r\n\r\n');
    refused('ICY 200 OK\r\n\r\n');
    refused('HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n');
    refused('HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n');
    refused('HTTP/1.1 200 OK\r\nX: a\u0001b\r\nContent-Length: 1\r\n\r\n');
  });

  test('reason and Connection values are kept as the upstream wrote them', () => {
    assert.equal(parse('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n').reason, 'OK');
    assert.equal(parse('HTTP/1.1 200 ok\r\nContent-Length: 0\r\n\r\n').reason, 'ok');
    assert.equal(parse('HTTP/1.1 200 OKAY\r\nContent-Length: 0\r\n\r\n').reason, 'OKAY');
    const ka = 'HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n';
    assert.equal(parse(ka).connection, 'keep-alive');
    const kaCase = 'HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n';
    assert.equal(parse(kaCase).connection, 'Keep-Alive');
    assert.equal(parse(kaCase).keepAlive, true);
    const closeCase = 'HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n';
    assert.equal(parse(closeCase).connection, 'Close');
    assert.equal(parse(closeCase).keepAlive, false);
    const two = 'HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: x-a\r\nContent-Length: 0\r\n\r\n';
    assert.equal(parse(two).connection, 'close,x-a');
  });
});
