/** Turns: async jobs one at a time, in order, a failed one not blocking the next. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Turns } from '../../src/core/turns.js';

test('jobs run one at a time in the order asked; a rejected job does not stop the next', async () => {
  const turns = new Turns();
  const log: string[] = [];
  let release: () => void = () => {};
  const first = turns.run(async () => {
    log.push('first starts');
    await new Promise<void>((r) => {
      release = r;
    });
    log.push('first ends');
    throw new Error('first failed');
  });
  const second = turns.run(async () => {
    log.push('second runs');
    return 2;
  });
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(log, ['first starts'], 'the second waits for the first');
  release();
  await assert.rejects(first, /first failed/);
  assert.equal(await second, 2);
  assert.deepEqual(log, ['first starts', 'first ends', 'second runs']);
});
