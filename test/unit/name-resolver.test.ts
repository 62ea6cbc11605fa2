/**
 * The gate in front of the system resolver (src/proxy/name-resolver.ts), driven by a lookup the
 * test answers by hand: which lookups start, when, and for whom. The same gate in a real process
 * with a DNS server that never answers: test/integration/destination-names.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type LookupOne, NameResolver } from '../../src/proxy/name-resolver.js';

/** A system resolver stand-in: records each lookup; `answer` finishes one. */
function handLookup(): {
  lookup: LookupOne;
  started: string[];
  answer(host: string, address: string | null): void;
} {
  const pending = new Map<string, (err: NodeJS.ErrnoException | null, address: string) => void>();
  const started: string[] = [];
  return {
    started,
    lookup: (host, done) => {
      started.push(host);
      pending.set(host, done);
    },
    answer(host, address) {
      const done = pending.get(host);
      assert.ok(done, `${host} is not being looked up`);
      pending.delete(host);
      if (address === null)
        done(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' }), '');
      else done(null, address);
    },
  };
}

const LONG = 60_000;

describe('NameResolver', () => {
  test('callers of a name being looked up share that lookup (any case)', async () => {
    const h = handLookup();
    const r = new NameResolver({ lookup: h.lookup });
    const a = r.resolve('db.test', 'a', LONG);
    const b = r.resolve('DB.test', 'b', LONG);
    assert.deepEqual(h.started, ['db.test']);
    h.answer('db.test', '10.0.0.7');
    assert.deepEqual(await Promise.all([a, b]), ['10.0.0.7', '10.0.0.7']);
    // answered: the next caller looks it up again (no cache: the system resolver has its own)
    const c = r.resolve('db.test', 'a', LONG);
    assert.deepEqual(h.started, ['db.test', 'db.test']);
    h.answer('db.test', '10.0.0.8');
    assert.equal(await c, '10.0.0.8');
  });

  test('a failed lookup fails every caller with its errno', async () => {
    const h = handLookup();
    const r = new NameResolver({ lookup: h.lookup });
    const a = r.resolve('gone.test', 'a', LONG);
    const b = r.resolve('gone.test', 'b', LONG);
    h.answer('gone.test', null);
    for (const p of [a, b]) await assert.rejects(p, { code: 'ENOTFOUND' });
    assert.deepEqual(r.load(), { running: 0, waiting: 0 });
  });

  test('one client runs at most its share while another client is served at once', async () => {
    const h = handLookup();
    const r = new NameResolver({ lookup: h.lookup, slots: 4, perClient: 2 });
    const dead = ['d1', 'd2', 'd3', 'd4', 'd5'].map((n) => r.resolve(n, 'a', 50));
    assert.deepEqual(h.started, ['d1', 'd2'], 'client a: two running, three waiting');
    const fast = r.resolve('fast.test', 'b', LONG);
    assert.deepEqual(h.started, ['d1', 'd2', 'fast.test']);
    h.answer('fast.test', '127.0.0.1');
    assert.equal(await fast, '127.0.0.1');
    // client a's callers give up; its waiting lookups are dropped, never started
    for (const p of dead) await assert.rejects(p, { code: 'ETIMEDOUT' });
    assert.deepEqual(r.load(), { running: 2, waiting: 0 });
    h.answer('d1', null);
    h.answer('d2', null);
    assert.deepEqual(h.started, ['d1', 'd2', 'fast.test'], 'd3..d5 never looked up');
    assert.deepEqual(r.load(), { running: 0, waiting: 0 });
  });

  test('waiting lookups start in turn by client, not in arrival order', () => {
    const h = handLookup();
    const r = new NameResolver({ lookup: h.lookup, slots: 1, perClient: 1 });
    for (const n of ['a1', 'a2', 'a3']) void r.resolve(n, 'a', LONG).catch(() => {});
    for (const n of ['b1', 'b2']) void r.resolve(n, 'b', LONG).catch(() => {});
    for (const n of ['a1', 'b1', 'a2', 'b2']) h.answer(n, '127.0.0.1');
    assert.deepEqual(h.started, ['a1', 'b1', 'a2', 'b2', 'a3']);
    h.answer('a3', '127.0.0.1');
    assert.deepEqual(r.load(), { running: 0, waiting: 0 });
  });

  test('past its waiting share a client is refused at once (EBUSY); others are not', async () => {
    const h = handLookup();
    const r = new NameResolver({ lookup: h.lookup, slots: 1, perClient: 1, maxWaitingPerClient: 2 });
    const a = ['a1', 'a2', 'a3'].map((n) => r.resolve(n, 'a', LONG));
    await assert.rejects(r.resolve('a4', 'a', LONG), { code: 'EBUSY' });
    // a name already being looked up is shared, whoever asks: no new wait
    const shared = r.resolve('a2', 'a', LONG);
    const b = r.resolve('b1', 'b', LONG);
    for (const n of ['a1', 'b1', 'a2', 'a3']) h.answer(n, '127.0.0.2');
    assert.deepEqual(await Promise.all([...a, shared, b]), Array(5).fill('127.0.0.2'));
  });

  test('past the waiting limit in all, every client is refused until lookups finish', async () => {
    const h = handLookup();
    const r = new NameResolver({ lookup: h.lookup, slots: 1, perClient: 1, maxWaiting: 2 });
    const first = r.resolve('x1', 'a', LONG); // running
    const waiting = [r.resolve('x2', 'b', LONG), r.resolve('x3', 'c', LONG)];
    await assert.rejects(r.resolve('x4', 'd', LONG), { code: 'EBUSY' });
    h.answer('x1', '127.0.0.3');
    assert.equal(await first, '127.0.0.3');
    const later = r.resolve('x4', 'd', LONG); // x2 started: room again
    for (const n of ['x2', 'x3', 'x4']) h.answer(n, '127.0.0.3');
    assert.deepEqual(await Promise.all([...waiting, later]), Array(3).fill('127.0.0.3'));
  });
});
