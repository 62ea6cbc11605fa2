/** The chunked decoder: RFC 9112 §7.1 framing, any split of the input, strict refusals. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isZiplineError } from '../../src/errors.js';
import { ClientBody } from '../../src/http/client-body.js';
import { ChunkedDecoder } from '../../src/http/parser/chunked.js';
import type { RequestHead } from '../../src/http/parser/request-head.js';

function decode(text: string, split = 0): { body: string; used: number; done: boolean } {
  const buf = Buffer.from(text, 'latin1');
  const d = new ChunkedDecoder();
  const parts: Buffer[] = [];
  let pos = 0;
  const step = split || buf.length;
  while (pos < buf.length && !d.done) {
    const end = Math.min(buf.length, pos + step);
    pos = d.feed(buf, pos, end, (b) => parts.push(Buffer.from(b)));
  }
  return { body: Buffer.concat(parts).toString('latin1'), used: pos, done: d.done };
}

function refused(text: string): void {
  for (const split of [0, 1]) {
    assert.throws(
      () => decode(text, split),
      (e: unknown) => isZiplineError(e) && e.code === 'ZL_HTTP_BAD_REQUEST',
      JSON.stringify(text),
    );
  }
}

describe('chunked decoding', () => {
  const msg = '5\r\nhello\r\n6;ext=1;q="x"\r\n world\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n';

  test('decodes data, extensions and trailers; stops at the end of the message', () => {
    const r = decode(`${msg}GET /next`);
    assert.equal(r.body, 'hello world0123456789');
    assert.equal(r.done, true);
    assert.equal(r.used, msg.length, 'what follows belongs to the next message');
  });

  test('every split of the input decodes the same (1-byte feeds, every cut point)', () => {
    assert.equal(decode(msg, 1).body, 'hello world0123456789');
    for (let cut = 1; cut < msg.length; cut++) {
      const buf = Buffer.from(msg, 'latin1');
      const d = new ChunkedDecoder();
      const parts: Buffer[] = [];
      let pos = d.feed(buf, 0, cut, (b) => parts.push(Buffer.from(b)));
      assert.equal(pos, cut);
      pos = d.feed(buf, pos, buf.length, (b) => parts.push(Buffer.from(b)));
      assert.equal(Buffer.concat(parts).toString(), 'hello world0123456789', `cut at ${cut}`);
      assert.equal(d.done, true);
    }
  });

  test('data is handed out without copying', () => {
    const buf = Buffer.from('3\r\nabc\r\n0\r\n\r\n');
    const d = new ChunkedDecoder();
    let slice: Buffer | undefined;
    d.feed(buf, 0, buf.length, (b) => {
      slice = b;
    });
    assert.ok(slice && slice.buffer === buf.buffer && slice.byteOffset === buf.byteOffset + 3);
  });

  test('refuses malformed framing', () => {
    refused('g\r\nx\r\n0\r\n\r\n');
    refused('\r\n');
    refused('5\nhello\r\n0\r\n\r\n');
    refused('5\r\nhelloXX0\r\n\r\n');
    refused('5\r\nhello\r0\r\n\r\n');
    refused('0\r\n\r\r');
    refused('-1\r\n');
    refused(' 5\r\nhello\r\n0\r\n\r\n');
    refused('5 \r\nhello\r\n0\r\n\r\n');
    refused(`${'f'.repeat(14)}\r\n`);
    refused('5;a\u0000b\r\nhello\r\n0\r\n\r\n');
    refused(`5;${'e'.repeat(5000)}\r\n`);
    refused('0\r\nNoColon\r\n\r\n');
    refused('0\r\n: empty\r\n\r\n');
    refused('0\r\nBad Name: v\r\n\r\n');
    refused('0\r\nX: a\nb\r\n\r\n');
    refused(`0\r\nX: ${'v'.repeat(17 * 1024)}\r\n\r\n`);
  });

  test('chunk extensions: exactly RFC 9112 §7.1.1, or refused', () => {
    // validated as the RFC writes them (a client body's are then dropped, below)
    for (const ext of [
      ';a',
      ';a=b',
      ';a="b"',
      ';a="b;c\\"d"',
      ';a=b;c="d";e',
      ';  a  =  "x"  ;b',
      ';a\t=\tb',
      ';a="\u00e9"', // obs-text
    ]) {
      assert.equal(decode(`1${ext}\r\nx\r\n0${ext}\r\n\r\n`, 1).body, 'x', ext);
    }
    for (const ext of [
      ';',
      ';;',
      ';a=',
      ';=b',
      ';a="',
      ';a="x\\',
      ';a="x"y',
      ';a=b c',
      ';a ',
      ';a=b ',
      ';a="x" ',
      ';a b',
      ';a=@',
      ';a="x\u007f"',
      ' ;a', // whitespace between a size and `;`: RFC 9112 allows it, llhttp and nginx do not
    ]) {
      refused(`1${ext}\r\nx\r\n0\r\n\r\n`);
    }
  });

  test('chunk extensions are dropped from what a client body forwards: the framing stays, under every cut of the input', () => {
    const sent = '5;a=b\r\nhello\r\n6; name="q;x\\"" ;y\r\n world\r\n0;last\r\nX-T: 1\r\n\r\n';
    const forwarded = '5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n';
    const head = { chunked: true, contentLength: -1 } as RequestHead;
    const buf = Buffer.from(sent, 'latin1');
    for (let cut = 0; cut < buf.length; cut++) {
      for (const step of [buf.length, 1]) {
        const body = new ClientBody();
        body.begin(head);
        const parts: Buffer[] = [];
        const sink = { bodyChunk: (c: Buffer) => parts.push(c) };
        // the first `cut` bytes at once, then `step` at a time (a fresh view each: the read buffer)
        let pos = cut === 0 ? 0 : body.feed(Buffer.from(buf.subarray(0, cut)), 0, sink);
        while (pos < buf.length) {
          const piece = Buffer.from(buf.subarray(pos, Math.min(buf.length, pos + step)));
          pos += body.feed(piece, 0, sink);
        }
        assert.equal(Buffer.concat(parts).toString('latin1'), forwarded, `cut at ${cut}, step ${step}`);
        assert.ok(
          parts.every((p) => p.length > 0),
          'a read of extension bytes alone forwards no empty chunk',
        );
        assert.equal(body.done, true);
      }
    }
  });

  test('trailers: framing fields are refused (RFC 9110 §6.5.1); names that only look like them pass', () => {
    refused('0\r\nContent-Length: 5\r\n\r\n');
    refused('0\r\ntransfer-ENCODING: chunked\r\n\r\n');
    for (const name of [
      'Content-Lengths',
      'X-Content-Length',
      'Content-Type',
      'Transfer-Encodin',
      'Content-Lengti',
    ]) {
      assert.equal(decode(`0\r\n${name}: 1\r\n\r\n`, 1).done, true, name);
    }
  });
});
