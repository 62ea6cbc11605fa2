/** RFC 9112 request head parsing, including the request-smuggling cases a proxy must refuse. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isZiplineError } from '../../src/errors.js';
import {
  findHeadEnd,
  headerValue,
  parseRequestHead,
  type RequestHead,
  requestHeadEnd,
} from '../../src/http/parser/request-head.js';

function parseOnce(text: string, max: number): RequestHead {
  const buf = Buffer.from(text, 'latin1');
  const end = findHeadEnd(buf, buf.length, max);
  assert.ok(end > 0, 'head end not found');
  return parseRequestHead(buf, end);
}

/**
 * `text` with a long field after its first line: a head past findHeadEnd's `SEARCH_FROM` takes
 * its other path (Buffer#indexOf, bare LFs left to the parse), which must come to the same answer.
 */
function padded(text: string): string {
  const nl = text.indexOf('\n') + 1;
  return `${text.slice(0, nl)}X-Pad: ${'p'.repeat(120)}\r\n${text.slice(nl)}`;
}

/** Parses `text`, and checks that its padded form means the same request. */
function parse(text: string, max = 16 * 1024): RequestHead {
  const h = parseOnce(text, max);
  const p = parseOnce(padded(text), max);
  const keys = ['method', 'target', 'minor', 'host', 'contentLength', 'chunked', 'keepAlive'] as const;
  for (const k of keys) assert.equal(p[k], h[k], `padded ${JSON.stringify(text)}: ${k}`);
  assert.equal(p.headEnd, h.headEnd + padded(text).length - text.length, 'the body starts as far on');
  assert.equal(p.expectContinue, h.expectContinue);
  assert.equal(p.upgrade, h.upgrade);
  assert.equal(p.fieldCount, h.fieldCount + 1);
  return h;
}

/** `text` (and, under the default limit, its padded form) is refused with `code`. */
function refused(text: string, code = 'ZL_HTTP_BAD_REQUEST', max = 16 * 1024): void {
  const forms = max === 16 * 1024 ? [text, padded(text)] : [text];
  for (const t of forms) {
    assert.throws(
      () => parseOnce(t, max),
      (err: unknown) => isZiplineError(err) && err.code === code,
      `expected ${code} for ${JSON.stringify(t)}`,
    );
  }
}

describe('request head: valid requests', () => {
  test('a plain GET', () => {
    const h = parse('GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Custom-Header:  v1 \r\n\r\nBODY');
    assert.equal(h.method, 'GET');
    assert.equal(h.target, '/a?b=c');
    assert.equal(h.minor, 1);
    assert.equal(h.host, 'example.com');
    assert.equal(h.contentLength, -1);
    assert.equal(h.chunked, false);
    assert.equal(h.keepAlive, true);
    assert.equal(h.fieldCount, 2);
    assert.equal(h.raw.toString('latin1', h.fields[4], h.fields[5]), 'X-Custom-Header', 'name case kept');
    assert.equal(headerValue(h, 'x-custom-header'), 'v1', 'OWS trimmed');
    assert.equal(headerValue(h, 'x-custom-headers'), undefined, 'a longer name is another name');
    assert.equal(headerValue(h, 'x-custom-headex'), undefined);
    assert.equal(headerValue(h, 'x-custom'), undefined, 'nor is a prefix of it');
    const odd = parse('GET / HTTP/1.1\r\nHost: a\r\nX-^: caret\r\n\r\n');
    assert.equal(headerValue(odd, 'x-~'), undefined, 'only A-Z fold: ^ (0x5e) is not ~ (0x7e)');
    assert.equal(headerValue(odd, 'x-^'), 'caret');
    assert.equal(h.raw.toString('latin1', h.headEnd), 'BODY');
  });

  test('framing and connection semantics', () => {
    assert.equal(parse('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n').contentLength, 5);
    assert.equal(
      parse('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n').contentLength,
      5,
    );
    assert.equal(parse('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n').contentLength, 5);
    assert.equal(parse('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n').chunked, true);
    assert.equal(parse('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n').chunked, true);
    assert.equal(parse('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked,\r\n\r\n').chunked, true);
    assert.equal(parse('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n').keepAlive, false);
    assert.equal(parse('GET / HTTP/1.0\r\n\r\n').keepAlive, false, 'HTTP/1.0 needs no Host');
    assert.equal(parse('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n').keepAlive, true);
    assert.equal(
      parse('POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n').expectContinue,
      true,
    );
    const ws = parse(
      'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n',
    );
    assert.equal(ws.upgrade, 'websocket');
    assert.equal(
      parse('GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n').upgrade,
      null,
      'Upgrade without Connection: upgrade',
    );
    const h2c = parse(
      'GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n',
    );
    assert.equal(h2c.upgrade, null, 'Upgrade: h2c is served as HTTP/1.1, not passed on');
    assert.equal(parse('GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n').host, '[::1]:8080');
  });

  test('request-target forms (RFC 9112 §3.2)', () => {
    const origin = parse('GET /a HTTP/1.1\r\nHost: b\r\n\r\n');
    assert.equal(origin.absoluteForm, false);
    const abs = parse('GET HTTP://Api.Example.com:8080/v1?q=1 HTTP/1.1\r\nHost: other\r\n\r\n');
    assert.equal(abs.absoluteForm, true);
    assert.equal(abs.host, 'Api.Example.com:8080', 'the authority stands for the Host header');
    assert.equal(abs.target, 'HTTP://Api.Example.com:8080/v1?q=1');
    assert.equal(parse('GET http://a?q HTTP/1.0\r\n\r\n').host, 'a', 'no path, HTTP/1.0 without Host');
    assert.equal(parse('OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n').target, '*');
    assert.equal(parse('GET / HTTP/1.0\r\n\r\n').host, null);
  });
});

describe('request head: refused (smuggling and malformed framing)', () => {
  test('Content-Length with Transfer-Encoding, in either order', () => {
    refused('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n');
    refused('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n');
  });
  test('conflicting or malformed Content-Length', () => {
    refused('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n');
    refused('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\n');
    for (const v of ['+4', '-1', '4 4', '0x10', '', '1234567890123456', '4a']) {
      refused(`POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ${v}\r\n\r\n`);
    }
  });
  test('Transfer-Encoding with a coding before chunked: 501, not implemented', () => {
    refused(
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n',
      'ZL_HTTP_NOT_IMPLEMENTED',
    );
    refused(
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n',
      'ZL_HTTP_NOT_IMPLEMENTED',
    );
  });
  test('CONNECT: its authority-form target is left to the caller (the forward proxy reads it)', () => {
    const h = parse('CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n');
    assert.equal(h.target, 'a.example:443');
    assert.equal(h.absoluteForm, false);
  });
  test('a request-target in no form its method allows', () => {
    for (const t of [
      'a.example:443',
      'example.com/x',
      'ftp://a/x',
      'http:///x',
      'http://u@a/x',
      'http://a"b/',
    ]) {
      refused(`GET ${t} HTTP/1.1\r\nHost: a\r\n\r\n`);
    }
    refused('GET * HTTP/1.1\r\nHost: a\r\n\r\n');
    refused('GET http://a/ HTTP/1.1\r\n\r\n', 'ZL_HTTP_BAD_REQUEST'); // HTTP/1.1 still needs Host
  });
  test('Transfer-Encoding that does not end in exactly one chunked, or in HTTP/1.0', () => {
    for (const v of ['chunked, gzip', 'chunkedx', 'xchunked', 'chunked, chunked', 'gzip', ',']) {
      refused(`POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ${v}\r\n\r\n`);
    }
    refused('POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n');
  });
  test('line endings, folding, whitespace and control characters', () => {
    refused('GET / HTTP/1.1\nHost: a\n\n');
    refused('GET / HTTP/1.1\r\nHost: a\n\r\n');
    refused('GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n');
    refused('GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n');
    refused('GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n');
    refused('GET / HTTP/1.1\r\nHost: a\r\nX\u0000: b\r\n\r\n');
    refused('GET / HTTP/1.1\r\nHost: a\r\nX: a\u0000b\r\n\r\n');
    refused('GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n');
  });
  test('Host: missing or malformed in HTTP/1.1, repeated in any version (RFC 9112 §3.2)', () => {
    refused('GET / HTTP/1.1\r\n\r\n');
    refused('GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n');
    refused('GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n');
    refused('GET / HTTP/1.1\r\nHost: a b\r\n\r\n');
    refused('GET / HTTP/1.1\r\nHost: a/b\r\n\r\n');
    // an empty label, as nginx refuses it (a wildcard route would otherwise match `a..example.com`)
    refused('GET / HTTP/1.1\r\nHost: a..example.com\r\n\r\n');
    refused('GET http://a..example.com/ HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(
      parse('GET / HTTP/1.1\r\nHost: example.com.\r\n\r\n').host,
      'example.com.',
      'a root dot is fine',
    );
  });
  test('a Host like the last one read is still read and checked from its own bytes', () => {
    assert.equal(parse('GET / HTTP/1.1\r\nHost: app.example:80\r\n\r\n').host, 'app.example:80');
    assert.equal(parse('GET / HTTP/1.1\r\nHost: app.example:80\r\n\r\n').host, 'app.example:80');
    assert.equal(parse('GET / HTTP/1.1\r\nHost: app.example:81\r\n\r\n').host, 'app.example:81');
    refused('GET / HTTP/1.1\r\nHost: app.example/81\r\n\r\n');
    refused('GET / HTTP/1.1\r\nHost: app example:81\r\n\r\n');
    assert.equal(parse('GET / HTTP/1.1\r\nHost: APP.example:81\r\n\r\n').host, 'APP.example:81');
  });
  test('request line', () => {
    refused('GET  / HTTP/1.1\r\nHost: a\r\n\r\n');
    refused('GET / HTTP/1.1 \r\nHost: a\r\n\r\n');
    refused('G(T / HTTP/1.1\r\nHost: a\r\n\r\n');
    refused('GET /a b HTTP/1.1\r\nHost: a\r\n\r\n');
    refused('GET /index.html#.png HTTP/1.1\r\nHost: a\r\n\r\n');
    refused('GET http://a/x#y HTTP/1.1\r\nHost: a\r\n\r\n');
    assert.equal(parse('GET /a%23b?c=%23 HTTP/1.1\r\nHost: a\r\n\r\n').target, '/a%23b?c=%23');
    refused('GET / HTTP/1.1x\r\nHost: a\r\n\r\n');
    refused('GET / HTTP/2.0\r\nHost: a\r\n\r\n', 'ZL_HTTP_VERSION_NOT_SUPPORTED');
    refused('GET / HTTP/0.9\r\nHost: a\r\n\r\n', 'ZL_HTTP_VERSION_NOT_SUPPORTED');
    // a later HTTP/1 minor is processed as HTTP/1.1 (RFC 9110 §2.5), Host rule included
    assert.equal(parse('GET / HTTP/1.2\r\nHost: a\r\n\r\n').minor, 1);
    assert.equal(parse('GET / HTTP/1.9\r\nHost: a\r\n\r\n').keepAlive, true);
    refused('GET / HTTP/1.2\r\n\r\n');
    refused('GET / HTTP/1.10\r\nHost: a\r\n\r\n');
    refused(`${'A'.repeat(40)} / HTTP/1.1\r\nHost: a\r\n\r\n`);
  });
  test('a head over the limit is 431, also before it is complete', () => {
    refused(`GET / HTTP/1.1\r\nHost: a\r\nX: ${'v'.repeat(200)}\r\n\r\n`, 'ZL_HTTP_HEADERS_TOO_LARGE', 100);
    const partial = Buffer.from(`GET / HTTP/1.1\r\nX: ${'v'.repeat(200)}`);
    assert.throws(() => findHeadEnd(partial, partial.length, 100), /limits.max_header_bytes/);
    const fields = Array.from({ length: 201 }, (_, i) => `X${i}: v\r\n`).join('');
    refused(`GET / HTTP/1.1\r\nHost: a\r\n${fields}\r\n`, 'ZL_HTTP_HEADERS_TOO_LARGE');
  });
  test('a request line that alone does not fit is 414, complete or not; bytes no request starts with stay 400', () => {
    const long = Buffer.from(`GET /${'a'.repeat(200)} HTTP/1.1\r\nHost: a\r\n\r\n`);
    assert.throws(() => requestHeadEnd(long, 100), { code: 'ZL_HTTP_URI_TOO_LONG' });
    const partial = Buffer.from(`GET /${'a'.repeat(200)}`);
    assert.throws(() => requestHeadEnd(partial, 100), { code: 'ZL_HTTP_URI_TOO_LONG' });
    // the line fits, the fields do not: 431
    const fields = Buffer.from(`GET / HTTP/1.1\r\nHost: a\r\nX: ${'v'.repeat(200)}`);
    assert.throws(() => requestHeadEnd(fields, 100), { code: 'ZL_HTTP_HEADERS_TOO_LARGE' });
    assert.throws(() => requestHeadEnd(Buffer.alloc(200, 0x16), 100), { code: 'ZL_HTTP_BAD_REQUEST' });
  });
  test('requestHeadEnd refuses an incomplete head at once when no request line can start so', () => {
    const valid = Buffer.from('PROPFIND /a HTTP/1.1\r\nHost: a\r\n\r\n');
    for (let n = 0; n < valid.length; n++) assert.equal(requestHeadEnd(valid.subarray(0, n), 1024), -1);
    assert.equal(requestHeadEnd(valid, 1024), valid.length);
    for (const junk of [
      '\x16\x03\x01\x00',
      '*1\r\n$4\r\nPING',
      'SSH-2.0-x\r\n',
      ' GET',
      `${'A'.repeat(33)}`,
    ]) {
      assert.throws(
        () => requestHeadEnd(Buffer.from(junk, 'latin1'), 1024),
        (err: unknown) => isZiplineError(err) && err.code === 'ZL_HTTP_BAD_REQUEST',
        JSON.stringify(junk),
      );
    }
    assert.equal(requestHeadEnd(Buffer.from(`${'A'.repeat(32)}`), 1024), -1, 'a method may be 32 bytes');
    assert.equal(requestHeadEnd(Buffer.from('\r'), 1024), -1, 'half of an empty line before the request');
  });
  test('findHeadEnd waits for more bytes, and never reads past `end`', () => {
    const buf = Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    for (let end = 0; end < buf.length; end++) assert.equal(findHeadEnd(buf, end, 1024), -1);
    assert.equal(findHeadEnd(buf, buf.length, 1024), buf.length);
  });
});
