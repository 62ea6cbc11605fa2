/**
 * One suite, run against every balancing policy, plus the property each policy promises.
 * Pure: endpoints are objects, time is a number, no sockets.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { hash32 } from '../../src/balancer/hash-fn.js';
import {
  BALANCE_POLICIES,
  type BalancePolicy,
  createBalancer,
  type PickContext,
} from '../../src/balancer/index.js';
import { Endpoint } from '../../src/upstream/endpoint.js';

function endpoints(n: number, weights: number[] = []): Endpoint[] {
  return Array.from(
    { length: n },
    (_, i) =>
      new Endpoint(`s${i}:80`, `10.0.0.${i + 1}`, 80, {
        weight: weights[i] ?? 1,
        maxFails: 1,
        failTimeoutMs: 10_000,
        maxConnections: 0,
        backup: false,
      }),
  );
}

const ctx = (hash = 0, tried: Endpoint[] = []): PickContext => ({ hash, tried, now: 1_000_000 });

function counts(
  policy: BalancePolicy,
  eps: Endpoint[],
  picks: number,
  hashOf = (i: number) => hash32(`k${i}`),
) {
  const b = createBalancer(policy);
  b.update(eps);
  const c = new Map<Endpoint, number>();
  for (let i = 0; i < picks; i++) {
    const e = b.pick(ctx(hashOf(i)));
    assert.ok(e);
    c.set(e, (c.get(e) ?? 0) + 1);
  }
  return c;
}

for (const policy of BALANCE_POLICIES) {
  describe(`balancer conformance: ${policy}`, () => {
    test('returns undefined with no endpoints, or none eligible', () => {
      const b = createBalancer(policy);
      b.update([]);
      assert.equal(b.pick(ctx()), undefined);
      const eps = endpoints(3);
      b.update(eps);
      for (const e of eps) e.activeHealthy = false;
      assert.equal(b.pick(ctx()), undefined);
    });

    test('never picks a down, unhealthy, full or already-tried endpoint', () => {
      const eps = endpoints(5);
      const [down, unhealthy, full, tried, ok] = eps as [Endpoint, Endpoint, Endpoint, Endpoint, Endpoint];
      down.downUntil = 2_000_000;
      unhealthy.activeHealthy = false;
      full.settings = { ...full.settings, maxConnections: 1 };
      full.acquire();
      const b = createBalancer(policy);
      b.update(eps);
      for (let i = 0; i < 500; i++) assert.equal(b.pick(ctx(hash32(`x${i}`), [tried])), ok);
    });

    test('spreads over every eligible endpoint', () => {
      const eps = endpoints(4);
      if (policy === 'adaptive' || policy === 'least_conn' || policy === 'p2c') {
        // load-aware policies spread by load: hold the connections they hand out
        const b = createBalancer(policy);
        b.update(eps);
        for (let i = 0; i < 40; i++) b.pick(ctx())?.acquire();
        for (const e of eps) assert.ok(e.active >= 5, `${e.address} got ${e.active}`);
        return;
      }
      const c = counts(policy, eps, 4000);
      for (const e of eps) assert.ok((c.get(e) ?? 0) > 600, `${e.address} got ${c.get(e)}`);
    });
  });
}

describe('policy properties', () => {
  test('round_robin: smooth weighted, exact shares, no bursts (nginx sequence)', () => {
    const eps = endpoints(3, [5, 1, 1]);
    const b = createBalancer('round_robin');
    b.update(eps);
    const seq = Array.from({ length: 7 }, () => b.pick(ctx())?.address.slice(-4, -3));
    assert.deepEqual(seq.join(''), '1121311', 'a a b a c a a');
    const c = counts('round_robin', eps, 7000);
    assert.deepEqual(
      eps.map((e) => c.get(e)),
      [5000, 1000, 1000],
    );
  });

  test('random: weights honoured within ±5% of the expected share (20,000 picks)', () => {
    const eps = endpoints(3, [3, 1, 1]);
    const c = counts('random', eps, 20_000);
    const expected = [0.6, 0.2, 0.2];
    eps.forEach((e, i) => {
      const share = (c.get(e) ?? 0) / 20_000;
      assert.ok(Math.abs(share - (expected[i] as number)) < 0.05, `share ${share} vs ${expected[i]}`);
    });
  });

  test('hash: weights honoured within ±10% of the expected share', () => {
    const eps = endpoints(3, [2, 1, 1]);
    const c = counts('hash', eps, 40_000);
    const expected = [0.5, 0.25, 0.25];
    eps.forEach((e, i) => {
      const share = (c.get(e) ?? 0) / 40_000;
      assert.ok(
        Math.abs(share - (expected[i] as number)) < 0.1 * (expected[i] as number) * 4,
        `share ${share}`,
      );
    });
  });

  test('least_conn picks the least loaded (per weight)', () => {
    const eps = endpoints(3, [1, 1, 2]);
    const [a, b, c] = eps as [Endpoint, Endpoint, Endpoint];
    for (let i = 0; i < 5; i++) a.acquire();
    for (let i = 0; i < 2; i++) b.acquire();
    for (let i = 0; i < 6; i++) c.acquire(); // 6/2 = 3 per weight
    const bal = createBalancer('least_conn');
    bal.update(eps);
    assert.equal(bal.pick(ctx()), b);
    b.acquire(); // b: 3, c: 3 per weight -> tie, both acceptable, never a
    for (let i = 0; i < 10; i++) assert.notEqual(bal.pick(ctx()), a);
  });

  test('p2c never picks the most loaded of the two it samples (with two endpoints: the less loaded)', () => {
    const eps = endpoints(2);
    const [a, b] = eps as [Endpoint, Endpoint];
    for (let i = 0; i < 3; i++) a.acquire();
    const bal = createBalancer('p2c');
    bal.update(eps);
    for (let i = 0; i < 100; i++) assert.equal(bal.pick(ctx()), b);
  });

  test('hash: the same key always maps to the same endpoint', () => {
    const eps = endpoints(5);
    const bal = createBalancer('hash');
    bal.update(eps);
    for (let i = 0; i < 100; i++) {
      const h = hash32(`client-${i}`);
      assert.equal(bal.pick(ctx(h)), bal.pick(ctx(h)));
    }
  });

  for (const n of [2, 4, 9]) {
    test(`hash: adding a server to ${n} moves ≤ 1.2/${n + 1} of keys, and only to the new one`, () => {
      const before = endpoints(n);
      const after = [...before, ...endpoints(n + 1).slice(n)];
      const b1 = createBalancer('hash');
      b1.update(before);
      const b2 = createBalancer('hash');
      b2.update(after);
      const keys = 20_000;
      let moved = 0;
      for (let i = 0; i < keys; i++) {
        const h = hash32(`10.1.${i >> 8}.${i & 255}`);
        const x = b1.pick(ctx(h));
        const y = b2.pick(ctx(h));
        if (x?.address !== y?.address) {
          moved++;
          assert.equal(y, after[n], 'keys only move to the new server');
        }
      }
      assert.ok(moved / keys <= 1.2 / (n + 1), `moved ${moved / keys}, limit ${1.2 / (n + 1)}`);
      assert.ok(moved / keys >= 0.5 / (n + 1), `moved ${moved / keys}: the new server must take its share`);
    });
  }

  test('hash: an ineligible owner hands its keys to the next on the ring; others stay put', () => {
    const eps = endpoints(4);
    const bal = createBalancer('hash');
    bal.update(eps);
    const owners = Array.from({ length: 2000 }, (_, i) => bal.pick(ctx(hash32(`k${i}`))));
    (eps[1] as Endpoint).activeHealthy = false;
    for (let i = 0; i < 2000; i++) {
      const now = bal.pick(ctx(hash32(`k${i}`)));
      if (owners[i] !== eps[1]) assert.equal(now, owners[i]);
      else assert.notEqual(now, eps[1]);
    }
  });

  test('adaptive prefers the faster of two servers, and spreads once it is loaded', () => {
    const eps = endpoints(2);
    const [slow, fast] = eps as [Endpoint, Endpoint];
    for (let i = 0; i < 10; i++) {
      slow.recordSuccess(20);
      fast.recordSuccess(2);
    }
    const bal = createBalancer('adaptive');
    bal.update(eps);
    for (let i = 0; i < 20; i++) assert.equal(bal.pick(ctx()), fast, 'idle: always the faster one');
    // holding every connection it hands out, the fast one's load term grows until the slow one wins
    let slowPicks = 0;
    for (let i = 0; i < 100; i++) {
      const e = bal.pick(ctx());
      e?.acquire();
      if (e === slow) slowPicks++;
    }
    assert.ok(slowPicks > 0 && slowPicks < 50, `slow got ${slowPicks} of 100 under load`);
    assert.ok(fast.active > slow.active);
  });

  test('adaptive avoids a server that has been failing', () => {
    const eps = endpoints(2);
    const [flaky, steady] = eps as [Endpoint, Endpoint];
    flaky.recordSuccess(2);
    steady.recordSuccess(2.5);
    for (let i = 0; i < 5; i++) flaky.failureEwma += 0.2 * (1 - flaky.failureEwma);
    const bal = createBalancer('adaptive');
    bal.update(eps);
    assert.equal(bal.pick(ctx()), steady);
  });
});
