/** The turn clock (src/core/clock.ts): one clock read per event-loop turn, fresh in the next. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nowMs } from '../../src/core/clock.js';
import { onTurnEnd, scheduleTurnEnd } from '../../src/core/turn-end.js';

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('nowMs reads Date.now once per turn and again in the next one', async (t) => {
  await nextTurn(); // whatever an earlier read of this process cached is gone
  let wall = 1_000;
  let reads = 0;
  t.mock.method(Date, 'now', () => {
    reads++;
    return wall;
  });
  assert.equal(nowMs(), 1_000);
  wall = 2_000;
  assert.equal(nowMs(), 1_000, 'the same turn: the value it started with');
  assert.equal(nowMs(), 1_000);
  assert.equal(reads, 1);
  await nextTurn();
  assert.equal(nowMs(), 2_000, 'the next turn reads the clock again');
  assert.equal(reads, 2);
});

test('end-of-turn tasks run once per turn however often it is asked for, and again when asked later', async () => {
  let runs = 0;
  onTurnEnd(() => {
    runs++;
  });
  scheduleTurnEnd();
  scheduleTurnEnd();
  scheduleTurnEnd();
  assert.equal(runs, 0, 'not before the end of the turn');
  await nextTurn();
  assert.equal(runs, 1);
  await nextTurn();
  assert.equal(runs, 1, 'a turn that did not ask runs nothing');
  scheduleTurnEnd();
  await nextTurn();
  assert.equal(runs, 2);
});
