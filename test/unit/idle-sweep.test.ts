import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type IdleTracked, sweepIdle, sweepPeriod } from '../../src/l4/idle-sweep.js';

class Item implements IdleTracked {
  lastActivity = -1;
  idleMs = 0;
  count = 0;
  elsewhere = false;
  activity(): number | null {
    return this.elsewhere ? null : this.count;
  }
}

test('sweepIdle expires only items without traffic for the whole idle timeout', () => {
  const busy = new Item();
  const quiet = new Item();
  const items = new Set([busy, quiet]);
  const expired: Item[] = [];
  const expire = (i: Item): void => {
    expired.push(i);
    items.delete(i); // removal during the sweep is allowed
  };
  for (let t = 0; t < 5; t++) {
    busy.count++;
    sweepIdle(items, 100, 300, expire);
  }
  assert.deepEqual(expired, [quiet], 'quiet expired after 300 ms without activity; busy never');
  assert.equal(quiet.idleMs, 300);
  assert.equal(busy.idleMs, 0);
});

test('items whose idle timeout is enforced elsewhere (activity() === null) are never expired', () => {
  const native = new Item();
  native.elsewhere = true;
  const expired: Item[] = [];
  for (let t = 0; t < 10; t++) sweepIdle([native], 100, 300, (i) => expired.push(i));
  assert.deepEqual(expired, []);
  assert.equal(native.idleMs, 0);
});

test('sweepPeriod: idle/4 within [10 ms, 1 s]; 0 disables', () => {
  assert.equal(sweepPeriod(0), 0);
  assert.equal(sweepPeriod(20), 10);
  assert.equal(sweepPeriod(2000), 500);
  assert.equal(sweepPeriod(600_000), 1000);
});
