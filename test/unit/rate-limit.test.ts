/** The GCRA rate limiter on an explicit clock: burst, refill, Retry-After, keys, the table's bound. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfigText } from '../../src/config/load.js';
import { findHeadEnd, parseRequestHead } from '../../src/http/parser/request-head.js';
import { RateLimiter } from '../../src/http/rate-limit.js';

const limiter = (rate: number, burst?: number, maxKeys = 100) =>
  new RateLimiter({ rate, burst, key: 'client_ip', max_keys: maxKeys });

test('a key gets `burst` requests at once, then one per interval; the wait is until the next', () => {
  const l = limiter(10, 3); // one per 100 ms, three at once
  const t = 1_000_000;
  assert.deepEqual(
    [0, 0, 0].map(() => l.take('a', t)),
    [0, 0, 0],
  );
  assert.ok(Math.abs(l.take('a', t) - 100) < 1e-6, 'the fourth waits one interval');
  assert.ok(Math.abs(l.take('a', t + 40) - 60) < 1e-6, 'refused requests take nothing');
  assert.equal(l.take('a', t + 100), 0, 'one interval later: one more');
  assert.ok(l.take('a', t + 100) > 0);
  assert.equal(l.take('b', t + 100), 0, 'another key has its own count');
  // quiet for longer than the burst takes to refill: a full burst again, never more
  const later = t + 10_000;
  assert.deepEqual(
    [0, 0, 0].map(() => l.take('a', later)),
    [0, 0, 0],
  );
  assert.ok(l.take('a', later) > 0);
});

test('a steady client at the rate is never refused; above it, the excess is', () => {
  const l = limiter(100, 1); // one per 10 ms, no burst beyond one
  let refused = 0;
  for (let i = 0; i < 1000; i++) if (l.take('a', i * 10) !== 0) refused++;
  assert.equal(refused, 0);
  let admitted = 0;
  for (let i = 0; i < 1000; i++) if (l.take('b', 100_000 + i * 5) === 0) admitted++;
  assert.equal(admitted, 500, 'twice the rate: half admitted');
});

test('the default burst is one second of the rate (at least 1)', () => {
  assert.equal(limiter(50).burst, 50);
  assert.equal(limiter(0.5).burst, 1);
  assert.equal(limiter(2.5).burst, 3);
});

test('the table is bounded by max_keys: expired keys are swept first, else the oldest is forgotten', () => {
  const l = limiter(1, 1, 3);
  const t = 50_000;
  for (const k of ['a', 'b', 'c']) assert.equal(l.take(k, t), 0);
  assert.equal(l.size, 3);
  assert.equal(l.take('d', t), 0, 'a new key is admitted when the table is full');
  assert.equal(l.size, 3);
  assert.equal(l.take('a', t), 0, 'the oldest (a) was forgotten: it starts over');
  assert.ok(l.take('c', t) > 0, 'c was kept');
  // two seconds on, every count has run out: one sweep empties the table
  assert.equal(l.take('e', t + 2000), 0);
  assert.equal(l.size, 1);
});

test('config: rates as numbers or N/s, N/m, N/h; bad rates and keys are refused at their path', () => {
  const cfg = (rl: string) =>
    loadConfigText(
      `upstreams: { app: { servers: [127.0.0.1:1] } }\nlisteners: [{ protocol: http, listen: 127.0.0.1:0, upstream: app, rate_limit: ${rl} }]\n`,
      {},
    );
  const rate = (rl: string) => {
    const r = cfg(rl);
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    const l = r.config.listeners[0];
    return l !== undefined && 'rate_limit' in l ? l.rate_limit?.rate : undefined;
  };
  assert.equal(rate('{ rate: 50 }'), 50);
  assert.equal(rate('{ rate: 0.5 }'), 0.5);
  assert.equal(rate('{ rate: 30/m }'), 0.5);
  assert.equal(rate('{ rate: "10r/s" }'), 10);
  assert.equal(rate('{ rate: 3600/h }'), 1);
  for (const [bad, message] of [
    ['{ rate: 0 }', /invalid rate "0"/],
    ['{ rate: 5/d }', /invalid rate "5\/d"/],
    ['{ rate: 1, key: path }', /expected client_ip or header:NAME/],
    ['{ rate: 1, burst: 0 }', /rate_limit\.burst/],
    ['{ burst: 5 }', /rate_limit\.rate/],
  ] as const) {
    const r = cfg(bad);
    assert.equal(r.ok, false, bad);
    assert.match(!r.ok ? r.issues.map((i) => `${i.path}: ${i.message}`).join('\n') : '', message, bad);
  }
});

test('header keys: the value counts, absent headers count by address, long values are kept as a digest', () => {
  const l = new RateLimiter({ rate: 1, burst: 1, key: 'header:X-Api-Key', max_keys: 10 });
  const head = (extra: string) => {
    const buf = Buffer.from(`GET / HTTP/1.1\r\nHost: a\r\n${extra}\r\n`, 'latin1');
    return parseRequestHead(buf, findHeadEnd(buf, buf.length, 65536));
  };
  assert.equal(l.keyOf(head('x-api-key: alice\r\n'), '10.0.0.1'), 'alice');
  assert.equal(l.keyOf(head(''), '10.0.0.1'), '10.0.0.1');
  const long = 'k'.repeat(8000);
  const key = l.keyOf(head(`X-Api-Key: ${long}\r\n`), '10.0.0.1');
  assert.ok(key.length <= 64 && key.startsWith('#'), key);
  assert.notEqual(key, l.keyOf(head(`X-Api-Key: ${long}x\r\n`), '10.0.0.1'));
});
