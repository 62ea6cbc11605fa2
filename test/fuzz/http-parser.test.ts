/**
 * Fuzzing the HTTP/1.1 parsers: mutated requests and random bytes never make them throw anything
 * but a coded ZL_HTTP_* error, and never loop. Deterministic (seeded).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isZiplineError } from '../../src/errors.js';
import { ChunkedDecoder } from '../../src/http/parser/chunked.js';
import { findHeadEnd, parseRequestHead } from '../../src/http/parser/request-head.js';
import { parseResponseHead } from '../../src/http/parser/response-head.js';
import { rng } from '../helpers/rng.js';

const SEEDS = [
  'GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
  'POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello',
  'POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nT: v\r\n\r\n',
  'GET http://a:8/x?y HTTP/1.1\r\nHost: b\r\n\r\n',
  'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n',
  'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n\r\nok',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
];
const TOKENS = [
  '\r',
  '\n',
  '\r\n',
  ' ',
  '\t',
  ':',
  ',',
  '0',
  'f',
  ';',
  '\u0000',
  '\u007f',
  '\u00ff',
  'chunked',
  'Content-Length: 1\r\n',
  'Transfer-Encoding: chunked\r\n',
  'Host: b\r\n',
];

function expectCoded(fn: () => void, input: string): void {
  try {
    fn();
  } catch (err) {
    if (
      !isZiplineError(err) ||
      !(err.code.startsWith('ZL_HTTP_') || err.code === 'ZL_UPSTREAM_BAD_RESPONSE')
    ) {
      assert.fail(`uncoded error ${(err as Error).stack} on ${JSON.stringify(input)}`);
    }
  }
}

test('200,000 mutated or random inputs (requests, responses, chunked bodies): only coded errors', () => {
  const r = rng(0xc0ffee);
  for (let i = 0; i < 200_000; i++) {
    let text: string;
    if (i % 5 === 0) {
      text = Array.from({ length: Math.floor(r() * 80) }, () =>
        String.fromCharCode(Math.floor(r() * 256)),
      ).join('');
    } else {
      text = SEEDS[i % SEEDS.length] as string;
      for (let e = 1 + Math.floor(r() * 3); e > 0; e--) {
        const at = Math.floor(r() * text.length);
        const tok = TOKENS[Math.floor(r() * TOKENS.length)] as string;
        text =
          r() < 0.5
            ? text.slice(0, at) + tok + text.slice(at)
            : text.slice(0, at) + text.slice(at + 1 + Math.floor(r() * 4));
      }
    }
    const buf = Buffer.from(text, 'latin1');
    expectCoded(() => {
      const end = findHeadEnd(buf, buf.length, 4096);
      if (end < 0) return;
      if (text.startsWith('HTTP/')) {
        parseResponseHead(buf, end, i % 2 === 0 ? 'GET' : 'HEAD');
        return;
      }
      const head = parseRequestHead(buf, end);
      if (!head.chunked) return;
      const d = new ChunkedDecoder();
      const used = d.feed(buf, end, buf.length, () => {});
      assert.ok(used >= end && used <= buf.length);
    }, text);
  }
});
