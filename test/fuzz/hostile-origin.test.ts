/**
 * A hostile origin, end to end: each request names a case, and the origin answers it with bytes
 * drawn at random from valid responses (Content-Length, chunked with extensions and trailers,
 * close-delimited; 1xx heads first; bodies that mimic framing), truncated ones (cut anywhere in
 * the head or body, then FIN or RST), close-delimited ones ended by an RST, malformed heads and
 * malformed chunking mid-body, written in random pieces. A strict client checks each answer:
 * a valid response arrives byte for byte; a bad head is a 502 from zipline; a truncated or
 * malformed body is never presented as complete (docs/HTTP.md: aborted, with an RST where only
 * the close would end it). Only GET and HEAD, which zipline may retry, so the keep-alive race is
 * not an outcome. Deterministic (seeded); the first failure names its case.
 */
import assert from 'node:assert/strict';
import { connect, type Server, type Socket } from 'node:net';
import { after, test } from 'node:test';
import { closeServer, port, RESETS_TOLD, splitAddress, tcpServer, until } from '../helpers/net.js';
import { rng } from '../helpers/rng.js';
import { reader } from '../helpers/strict-reader.js';
import { startRuntime } from '../helpers/zipline.js';

const CASES = 3000;

type Expect =
  | { readonly k: 'ok'; readonly status: number; readonly body: Buffer }
  | { readonly k: 'bad' }
  | { readonly k: 'trunc' };

interface Case {
  readonly method: 'GET' | 'HEAD';
  readonly bytes: Buffer;
  readonly end: 'keep' | 'fin' | 'rst';
  readonly expect: Expect;
}

function makeCase(seed: number): Case {
  const r = rng(seed * 7919 + 1);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
  const method = r() < 0.2 ? 'HEAD' : 'GET';
  const size = pick([0, 1, 2, 100, 8191, 8192, 8193, 16384, 16385, 70000, int(0, 200_000)]);
  const body = Buffer.alloc(size);
  for (let i = 0; i < size; i++) body[i] = 97 + ((i * 7 + size) % 26);
  if (size > 40 && r() < 0.3) body.write('\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n', int(0, size - 40), 'latin1');
  const chunked = (noEnd = false): Buffer => {
    const out: Buffer[] = [];
    for (let i = 0; i < size; ) {
      const n = Math.min(size - i, pick([1, 15, 100, 4096, 16384, int(1, 30000)]));
      const hex = r() < 0.2 ? n.toString(16).toUpperCase() : n.toString(16);
      out.push(Buffer.from(`${r() < 0.1 ? '00' : ''}${hex}${r() < 0.1 ? ';a=b;c="d e"' : ''}\r\n`));
      out.push(body.subarray(i, i + n), Buffer.from('\r\n'));
      i += n;
    }
    if (!noEnd) out.push(Buffer.from(r() < 0.2 ? '0\r\nX-Trailer: yes\r\n\r\n' : '0\r\n\r\n'));
    return Buffer.concat(out);
  };
  const status = pick([200, 200, 201, 206, 404, 500, 502, 503]);
  const extra = r() < 0.3 ? 'Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n' : '';
  const framing = pick(['length', 'length', 'chunked', 'close'] as const);
  const headOf = (f: typeof framing): string =>
    `HTTP/1.1 ${status} X\r\n${extra}${f === 'length' ? `Content-Length: ${size}\r\n` : f === 'chunked' ? 'Transfer-Encoding: chunked\r\n' : ''}`;
  const payloadOf = (f: typeof framing): Buffer => (f === 'chunked' ? chunked() : body);
  const kind = r();
  if (kind < 0.5) {
    // valid; a close-delimited body ends with the FIN, and so does one that says Connection: close
    const f = method === 'HEAD' && framing === 'close' ? 'length' : framing;
    const end = f === 'close' || r() < 0.2 ? 'fin' : 'keep';
    let head = `${headOf(f)}${end === 'fin' ? 'Connection: close\r\n' : ''}\r\n`;
    if (r() < 0.1) head = `HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n${head}`;
    const bytes = Buffer.concat([
      Buffer.from(head, 'latin1'),
      method === 'HEAD' ? Buffer.alloc(0) : payloadOf(f),
    ]);
    return {
      method,
      bytes,
      end,
      expect: { k: 'ok', status, body: method === 'HEAD' ? Buffer.alloc(0) : body },
    };
  }
  if (kind < 0.7) {
    // cut short anywhere, then FIN or RST: a cut head is a 502, a cut body never looks complete
    const f = framing === 'close' ? 'length' : framing;
    const head = Buffer.from(`${headOf(f)}\r\n`, 'latin1');
    const full = Buffer.concat([head, method === 'HEAD' ? Buffer.alloc(0) : payloadOf(f)]);
    if (full.length === head.length) {
      return {
        method,
        bytes: head.subarray(0, int(1, head.length - 1)),
        end: pick(['fin', 'rst']),
        expect: { k: 'bad' },
      };
    }
    const cut = int(r() < 0.2 ? 1 : head.length, full.length - 1);
    const expect: Expect = cut < head.length ? { k: 'bad' } : { k: 'trunc' };
    return { method, bytes: full.subarray(0, cut), end: pick(['fin', 'rst']), expect };
  }
  if (kind < 0.78 && RESETS_TOLD && method === 'GET') {
    // close-delimited and ended by an RST: only the FIN would say complete
    return {
      method,
      bytes: Buffer.concat([Buffer.from(`${headOf('close')}\r\n`), body]),
      end: 'rst',
      expect: { k: 'trunc' },
    };
  }
  if (kind < 0.9) {
    const bad = pick([
      'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
      'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 1,2\r\n\r\nab',
      'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n',
      'HTTP/1.1 099 OK\r\nContent-Length: 0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n x\r\n\r\nok',
      'HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n',
      `HTTP/1.1 200 OK\r\nX: ${'a'.repeat(70_000)}\r\n\r\n`,
      'ICY 200 OK\r\n\r\n',
      '\x15\x03\x03\x00\x02\x02\x46',
      'SSH-2.0-OpenSSH_9.6\r\n',
    ]);
    return { method, bytes: Buffer.from(bad, 'latin1'), end: pick(['keep', 'fin']), expect: { k: 'bad' } };
  }
  // valid head, then chunking that goes wrong after some good chunks
  if (method === 'HEAD') return makeCase(seed + CASES * 10);
  const tail = pick([
    'zz\r\nabc\r\n0\r\n\r\n',
    'fffffffffffffffffff\r\n',
    '5\r\nhelloXX0\r\n\r\n',
    '-1\r\n\r\n',
    '5 \r\nhello\r\n0\r\n\r\n',
    '5\nhello\r\n0\r\n\r\n',
  ]);
  const bytes = Buffer.concat([
    Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'),
    chunked(true),
    Buffer.from(tail),
  ]);
  return { method, bytes, end: pick(['keep', 'fin', 'rst']), expect: { k: 'trunc' } };
}

/** The origin: reads each request head, answers its case in random pieces, ends as the case says. */
function serve(s: Socket): void {
  s.on('error', () => {});
  let buf = Buffer.alloc(0);
  let busy = false;
  const next = (): void => {
    const end = buf.indexOf('\r\n\r\n');
    if (busy || end < 0) return;
    const seed = Number(/^\w+ \/c\/(\d+) /.exec(buf.subarray(0, end).toString('latin1'))?.[1]);
    buf = buf.subarray(end + 4);
    const c = makeCase(seed);
    const r = rng(seed);
    busy = true;
    let off = 0;
    const step = (): void => {
      if (s.destroyed) return;
      if (off >= c.bytes.length) {
        busy = false;
        if (c.end === 'fin') s.end();
        else if (c.end === 'rst') s.resetAndDestroy();
        else next();
        return;
      }
      const n = r() < 0.5 ? c.bytes.length - off : 1 + Math.floor(r() * (c.bytes.length - off));
      s.write(c.bytes.subarray(off, off + n));
      off += n;
      if (r() < 0.7) step();
      else setImmediate(step);
    };
    step();
  };
  s.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    next();
  });
}

let origin: Server | null = null;
after(async () => {
  if (origin !== null) await closeServer(origin);
});

test(`a hostile origin: ${CASES} random answers (valid, cut by FIN or RST, malformed) — valid ones arrive whole, bad heads are 502, and a cut or malformed body never looks complete`, {
  timeout: 120_000,
}, async () => {
  origin = await tcpServer(serve);
  const z = await startRuntime(`
log: { access: off }
upstreams:
  origin:
    servers: [127.0.0.1:${port(origin)}]
    # nothing here is the server's health: every answer is its own case
    circuit_breaker: { failure_ratio: 1, min_requests: 1000000 }
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, upstream: origin }
`);
  const [host, p] = splitAddress(z.addr('web'));
  let next = 0;
  const seen = { ok: 0, bad: 0, trunc: 0 };
  const worker = async (): Promise<void> => {
    while (next < CASES) {
      const s = connect(p, host);
      const read = reader(s);
      // up to three requests per connection, while the answers leave it open
      for (let uses = 0; uses < 3 && next < CASES; uses++) {
        const seed = next++;
        const c = makeCase(seed);
        s.write(`${c.method} /c/${seed} HTTP/1.1\r\nHost: fuzz\r\n\r\n`);
        const a = await read(c.method);
        const what = `case ${seed} (${c.method}, ${c.expect.k}, ends ${c.end}): ${JSON.stringify({ ...a, body: a.body?.length })}`;
        seen[c.expect.k]++;
        if (c.expect.k === 'ok') {
          assert.ok(a.complete, `a valid answer arrives complete: ${what}`);
          assert.equal(a.status, c.expect.status, what);
          assert.equal(a.zerr, undefined, what);
          assert.ok(a.body?.equals(c.expect.body), `byte for byte: ${what}`);
        } else if (c.expect.k === 'bad') {
          assert.ok(a.complete && a.status === 502 && a.zerr !== undefined, `a 502 from zipline: ${what}`);
        } else {
          assert.ok(!a.complete || (a.status === 502 && a.zerr !== undefined), `never complete: ${what}`);
        }
        if (!a.complete || a.close === true) break;
      }
      s.destroy();
    }
  };
  try {
    await Promise.all(Array.from({ length: 8 }, worker));
    assert.ok(seen.ok > 500 && seen.bad > 150 && seen.trunc > 300, JSON.stringify(seen));
    await until(() => z.rt.activeCount() === 0, 'every client connection closed');
  } finally {
    await z.stop();
  }
});
