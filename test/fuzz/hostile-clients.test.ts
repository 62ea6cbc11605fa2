/**
 * Hostile clients, end to end: seeded connections send random requests (GET, POST, PUT; no body,
 * Content-Length or chunked bodies with extensions and trailers; `Expect: 100-continue`),
 * pipelined or one at a time, written in random pieces; some are invalid (smuggling shapes,
 * malformed chunking, bare LF, obs-fold) and some are cut mid-body, then reset or half-closed.
 * The origin records every request it took as complete. Checked: every answer belongs to its own
 * request (the origin echoes the id, length and digest of the body it read); an invalid request
 * is a 400 (or 501) from zipline, and one whose head is invalid never reaches the origin; a
 * request cut short never reaches the origin as complete (docs/HTTP.md). Deterministic requests
 * (seeded); the first failure names its connection and request. Run over plain HTTP and over
 * TLS (an `https` listener: its reads are 'data' events, not the shared-buffer path).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { closeServer, listen, port, splitAddress, until } from '../helpers/net.js';
import { rng } from '../helpers/rng.js';
import { type Answer, reader } from '../helpers/strict-reader.js';
import { ROOT, startRuntime } from '../helpers/zipline.js';

const CONNECTIONS = 600;

type Kind = 'complete' | 'invalid-head' | 'invalid-body' | 'cut';

interface Req {
  readonly id: string;
  readonly method: 'GET' | 'POST' | 'PUT';
  readonly kind: Kind;
  readonly bytes: Buffer;
  readonly len: number;
  readonly digest: string;
  /** How a cut request's connection ends. */
  readonly end: 'rst' | 'fin';
}

const digest = (b: Buffer): string => createHash('sha1').update(b).digest('hex');

const INVALID_HEAD = [
  'POST {id} HTTP/1.1\r\nHost: f\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  'POST {id} HTTP/1.1\r\nHost: f\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
  'GET {id} HTTP/1.1\r\nHost: f\r\nX: a\r\n b\r\n\r\n',
  'GET {id} HTTP/1.1\nHost: f\n\n',
  'POST {id} HTTP/1.1\r\nHost: f\r\nContent-Length: +5\r\n\r\nhello',
  'POST {id} HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n',
];
const INVALID_BODY = [
  'zz\r\nhello\r\n0\r\n\r\n',
  '5\r\nhelloXX0\r\n\r\n',
  '-5\r\nhello\r\n0\r\n\r\n',
  'fffffffffffffffffff\r\n',
  '5\nhello\r\n0\r\n\r\n',
];

function makeRequest(r: () => number, id: string): Req {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
  const method = pick(['GET', 'POST', 'POST', 'PUT'] as const);
  const size = method === 'GET' ? 0 : pick([0, 1, 100, 8192, 16385, 70000, int(0, 200_000)]);
  const body = Buffer.alloc(size);
  for (let i = 0; i < size; i++) body[i] = 97 + ((i * 13 + size) % 26);
  const framing = method === 'GET' ? 'none' : pick(['length', 'length', 'chunked'] as const);
  let head = `${method} ${id} HTTP/1.1\r\nHost: fuzz\r\n`;
  if (framing !== 'none' && r() < 0.1) head += 'Expect: 100-continue\r\n';
  let payload = Buffer.alloc(0);
  if (framing === 'length') {
    head += `Content-Length: ${size}\r\n`;
    payload = body;
  } else if (framing === 'chunked') {
    head += 'Transfer-Encoding: chunked\r\n';
    const parts: Buffer[] = [];
    for (let i = 0; i < size; ) {
      const n = Math.min(size - i, pick([1, 10, 4096, int(1, 40_000)]));
      parts.push(
        Buffer.from(`${n.toString(16)}${r() < 0.1 ? ';x=y' : ''}\r\n`),
        body.subarray(i, i + n),
        Buffer.from('\r\n'),
      );
      i += n;
    }
    parts.push(Buffer.from(r() < 0.1 ? '0\r\nX-T: 1\r\n\r\n' : '0\r\n\r\n'));
    payload = Buffer.concat(parts);
  }
  const whole = Buffer.concat([Buffer.from(`${head}\r\n`), payload]);
  const base = { id, method, len: size, digest: digest(body), end: pick(['rst', 'fin'] as const) };
  const roll = r();
  if (roll < 0.05) {
    return { ...base, kind: 'invalid-head', bytes: Buffer.from(pick(INVALID_HEAD).replace('{id}', id)) };
  }
  if (roll < 0.08) {
    // a valid head (it may reach the origin), then chunking that goes wrong after a good chunk
    const bytes = Buffer.from(
      `POST ${id} HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n${pick(INVALID_BODY)}`,
    );
    return { ...base, method: 'POST', kind: 'invalid-body', bytes };
  }
  if (roll < 0.2 && payload.length > 0) {
    // cut anywhere after the head, before the body's last byte
    return { ...base, kind: 'cut', bytes: whole.subarray(0, int(head.length + 2, whole.length - 1)) };
  }
  return { ...base, kind: 'complete', bytes: whole };
}

/** What the origin saw: every head that reached it, and the requests it read to their end. */
const heads = new Set<string>();
const complete = new Map<string, { len: number; digest: string }>();
let inFlight = 0;

function record(req: IncomingMessage, res: ServerResponse): void {
  const id = req.url ?? '';
  heads.add(id);
  inFlight++;
  res.once('close', () => inFlight--);
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('error', () => {});
  req.on('end', () => {
    if (req.aborted) return;
    const body = Buffer.concat(chunks);
    complete.set(id, { len: body.length, digest: digest(body) });
    const out = JSON.stringify({ id, len: body.length, digest: digest(body) });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
    res.end(out);
  });
}

function check(q: Req, a: Answer, what: string): void {
  if (q.kind === 'invalid-head' || q.kind === 'invalid-body') {
    assert.ok(a.complete && (a.status === 400 || a.status === 501), `an invalid request is a 400: ${what}`);
    assert.ok(a.zerr !== undefined, `zipline's own answer: ${what}`);
    return;
  }
  assert.ok(a.complete, `an answer: ${what}`);
  assert.equal(a.status, 200, what);
  const got = JSON.parse((a.body ?? Buffer.alloc(0)).toString()) as {
    id: string;
    len: number;
    digest: string;
  };
  assert.deepEqual(got, { id: q.id, len: q.len, digest: q.digest }, `its own request's body: ${what}`);
}

const origin = createServer({ keepAliveTimeout: 60_000 }, record);
after(() => closeServer(origin));

const TLS_DIR = `${ROOT}test/fixtures/tls`;

for (const tls of [false, true])
  test(`hostile clients${tls ? ' over TLS' : ''}: ${CONNECTIONS} connections of random requests (pipelined, in pieces, invalid, cut by ${tls ? 'close' : 'RST'} or FIN) — each answer is its own request's, invalid ones are 400 and cut ones never reach the origin complete`, {
    timeout: 120_000,
  }, async () => {
    if (!origin.listening) await listen(origin);
    const z = await startRuntime(`
log: { access: off }
upstreams:
  origin:
    servers: [127.0.0.1:${port(origin)}]
listeners:
  - name: web
    protocol: ${tls ? 'https' : 'http'}
    listen: 127.0.0.1:0
    upstream: origin
${tls ? `    tls: { cert: ${TLS_DIR}/a.crt, key: ${TLS_DIR}/a.key }` : ''}
`);
    const [host, p] = splitAddress(z.addr('web'));
    const sent = new Map<string, Req>();
    const seen = { complete: 0, invalid: 0, cut: 0, pipelined: 0 };
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < CONNECTIONS) {
        const conn = next++;
        const r = rng(conn * 7919 + 3);
        const batch: Req[] = [];
        // up to four requests; nothing follows an invalid or cut one
        for (let i = 0, n = 1 + Math.floor(r() * 4); i < n; i++) {
          const q = makeRequest(r, `/${tls ? 's' : 'c'}/${conn}/${i}`);
          batch.push(q);
          sent.set(q.id, q);
          if (q.kind !== 'complete') break;
        }
        const pipelined = batch.length > 1 && r() < 0.3;
        const s: Socket = tls
          ? tlsConnect({ host, port: p, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] })
          : connect(p, host);
        s.on('error', () => {});
        await new Promise((resolve) => s.once(tls ? 'secureConnect' : 'connect', resolve));
        const read = reader(s);
        const what = (q: Req, a?: Answer): string =>
          `connection ${conn}${pipelined ? ' (pipelined)' : ''}, ${q.id} ${q.method} ${q.kind} ${q.len} B: ${JSON.stringify({ ...a, body: a?.body?.toString().slice(0, 120) })}`;
        for (const q of batch) {
          // one at a time: ask for this answer before writing, and wait for it after
          const answer = pipelined || q.kind === 'cut' ? null : read(q.method);
          for (let off = 0; off < q.bytes.length; ) {
            const k = r() < 0.6 ? q.bytes.length - off : 1 + Math.floor(r() * (q.bytes.length - off));
            s.write(q.bytes.subarray(off, off + k));
            off += k;
            if (r() < 0.2) await new Promise((resolve) => setImmediate(resolve));
          }
          if (q.kind === 'cut') {
            seen.cut++;
            // (a TLS socket has no reset of its own: a close)
            if (q.end === 'rst') tls ? s.destroy() : s.resetAndDestroy();
            else s.end();
            break;
          }
          if (answer !== null) {
            const a = await answer;
            check(q, a, what(q, a));
            seen[q.kind === 'complete' ? 'complete' : 'invalid']++;
          }
        }
        // a pipelined batch the client cut itself has nothing to check: its answers may never come
        if (pipelined && !batch.some((q) => q.kind === 'cut')) {
          seen.pipelined++;
          for (const q of batch) {
            const a = await read(q.method);
            check(q, a, what(q, a));
            seen[q.kind === 'complete' ? 'complete' : 'invalid']++;
          }
        }
        s.destroy();
      }
    };
    try {
      await Promise.all(Array.from({ length: 8 }, worker));
      assert.ok(
        seen.complete > 600 && seen.invalid > 40 && seen.cut > 60 && seen.pipelined > 40,
        JSON.stringify(seen),
      );
      // every exchange over at both ends before the origin's record is read
      await until(() => z.rt.activeCount() === 0 && inFlight === 0, 'every client and origin exchange over');
      for (const [id, q] of sent) {
        if (q.kind === 'invalid-head')
          assert.ok(!heads.has(id), `an invalid head never reaches the origin: ${id}`);
        const got = complete.get(id);
        if (q.kind !== 'complete')
          assert.equal(got, undefined, `${q.kind} ${id} reached the origin as complete`);
        else if (got !== undefined) assert.deepEqual(got, { len: q.len, digest: q.digest }, id);
      }
    } finally {
      await z.stop();
    }
  });
