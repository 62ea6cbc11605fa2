import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fullJitterBackoff } from '../../src/upstream/backoff.js';
import { Endpoint } from '../../src/upstream/endpoint.js';

const settings = { weight: 1, maxFails: 2, failTimeoutMs: 1000, maxConnections: 0, backup: false };

test('passive health follows nginx max_fails / fail_timeout', () => {
  const e = new Endpoint('a:1', '127.0.0.1', 1, settings);
  let now = 10_000;
  e.recordFailure(now);
  assert.equal(e.state(now), 'up', 'one failure of max_fails=2');
  now += 1500; // outside fail_timeout: the count starts again
  e.recordFailure(now);
  assert.equal(e.state(now), 'up');
  now += 100;
  e.recordFailure(now);
  assert.equal(e.state(now), 'down', 'two failures within fail_timeout');
  assert.equal(e.isUp(now + 999), false);
  assert.equal(e.isUp(now + 1000), true, 'retried after fail_timeout');
  assert.equal(e.state(now + 1000), 'probing');
  e.recordFailure(now + 1000);
  assert.equal(e.state(now + 1001), 'down', 'a failed probe takes it out again at once');
  e.recordSuccess(1);
  assert.equal(e.probing, false);
  assert.equal(e.state(now + 2001), 'up');
});

test('a lone server is never marked down; max_fails 0 disables', () => {
  const lone = new Endpoint('a:1', '127.0.0.1', 1, settings);
  lone.lone = true;
  for (let i = 0; i < 10; i++) lone.recordFailure(1000 + i);
  assert.equal(lone.isUp(1010), true);
  const off = new Endpoint('a:1', '127.0.0.1', 1, { ...settings, maxFails: 0 });
  for (let i = 0; i < 10; i++) off.recordFailure(1000 + i);
  assert.equal(off.isUp(1010), true);
  assert.equal(off.failures, 10, 'failures are still counted');
});

test('max_connections and active health gate eligibility', () => {
  const e = new Endpoint('a:1', '127.0.0.1', 1, { ...settings, maxConnections: 2 });
  e.acquire();
  assert.equal(e.hasCapacity(), true);
  e.acquire();
  assert.equal(e.hasCapacity(), false);
  e.release();
  assert.equal(e.hasCapacity(), true);
  e.activeHealthy = false;
  assert.equal(e.isUp(0), false);
  assert.equal(e.state(0), 'unhealthy');
});

test('full-jitter backoff stays within [0, min(max, base·2^n))', () => {
  assert.equal(
    fullJitterBackoff(0, 25, 250, () => 0.999),
    24,
  );
  assert.equal(
    fullJitterBackoff(3, 25, 250, () => 0.999),
    199,
  );
  assert.equal(
    fullJitterBackoff(10, 25, 250, () => 0.999),
    249,
  );
  assert.equal(
    fullJitterBackoff(10, 25, 250, () => 0),
    0,
  );
  for (let i = 0; i < 1000; i++) {
    const d = fullJitterBackoff(i % 12, 25, 250);
    assert.ok(d >= 0 && d < 250);
  }
});
