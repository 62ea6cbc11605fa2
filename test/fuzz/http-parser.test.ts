/**
 * Fuzzing the HTTP/1.1 parsers: mutated requests and random bytes never make them throw anything
 * but a coded ZL_HTTP_* error, and never loop. Deterministic (seeded).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ErrorCode, isZiplineError, ZiplineError } from '../../src/errors.js';
import { ChunkedDecoder } from '../../src/http/parser/chunked.js';
import { lineEnd, parseField, scanFields } from '../../src/http/parser/fields.js';
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
  // past findHeadEnd's SEARCH_FROM (96 bytes): its Buffer#indexOf path
  `GET /long HTTP/1.1\r\nHost: a\r\nUser-Agent: ${'u'.repeat(90)}\r\nContent-Length: 2\r\n\r\nhi`,
  `HTTP/1.1 200 OK\r\nServer: ${'s'.repeat(90)}\r\nContent-Length: 2\r\n\r\nok`,
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

/** The field loop as it was before `scanFields`: `lineEnd` then `parseField`, line by line. */
function referenceScan(buf: Buffer, start: number, end: number, out: number[], tooMany: ErrorCode): number {
  const max = out.length >> 2;
  let n = 0;
  let pos = start;
  while (pos < end - 2) {
    const eol = lineEnd(buf, pos, end);
    if (n === max) throw new ZiplineError(tooMany, 'too many header fields');
    parseField(buf, pos, eol, out, n);
    n++;
    pos = eol + 2;
  }
  return n;
}

function outcome(fn: () => number, out: number[]): string {
  try {
    const n = fn();
    return `ok ${out.slice(0, n * 4).join(',')}`;
  } catch (err) {
    if (!isZiplineError(err)) throw err;
    return `${err.code} ${err.message}`;
  }
}

test("scanFields takes exactly the reference loop's decisions: 200,000 mutated field blocks", () => {
  const r = rng(0x5ca1ab1e);
  const BLOCKS = [
    'Host: a\r\nX-A:  v \r\nContent-Length: 5\r\n',
    `A: b\r\nUser-Agent: ${'u'.repeat(40)}\r\n`,
    'K:\r\n',
  ];
  let errors = 0;
  for (let i = 0; i < 200_000; i++) {
    let block = BLOCKS[i % BLOCKS.length] as string;
    for (let e = 1 + Math.floor(r() * 3); e > 0; e--) {
      const at = Math.floor(r() * block.length);
      const tok = TOKENS[Math.floor(r() * TOKENS.length)] as string;
      block =
        r() < 0.6 ? block.slice(0, at) + tok + block.slice(at) : block.slice(0, at) + block.slice(at + 1);
    }
    const buf = Buffer.from(`S\r\n${block}\r\n\r\n`, 'latin1');
    const end = buf.indexOf('\r\n\r\n', 1, 'latin1') + 4;
    // a small field limit now and then, so the limit's place among the errors is compared too
    const max = i % 7 === 0 ? 1 + Math.floor(r() * 3) : 200;
    const a = new Array<number>(max * 4).fill(0);
    const b = new Array<number>(max * 4).fill(0);
    const want = outcome(() => referenceScan(buf, 3, end, a, 'ZL_HTTP_HEADERS_TOO_LARGE'), a);
    const got = outcome(() => scanFields(buf, 3, end, b, 'ZL_HTTP_HEADERS_TOO_LARGE'), b);
    assert.equal(got, want, JSON.stringify(buf.toString('latin1')));
    if (!want.startsWith('ok')) errors++;
  }
  assert.ok(errors > 20_000, `the mutations reach the error paths (${errors})`);
});
