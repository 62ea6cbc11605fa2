/** `/stats` with workers: each worker's view merged into the one-process shape. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mergeStats } from '../../src/workers/merge-stats.js';

const server = (state: string, active: number, ewma: number, down: number) => ({
  server: 'a:1',
  address: '127.0.0.1:1',
  state,
  weight: 3,
  active,
  total: active * 10,
  ewma_latency_ms: ewma,
  down_for_ms: down,
  health: { healthy: state === 'up', passes: 2 },
});

test('counts add up, ewma figures average, down_for_ms takes the longest, config values stay', () => {
  const merged = mergeStats([
    { app: { balance: 'p2c', active: 2, servers: [server('up', 2, 1, 0)] } },
    { app: { balance: 'p2c', active: 5, servers: [server('up', 5, 3, 0)] } },
  ]);
  assert.deepEqual(merged, {
    app: {
      balance: 'p2c',
      active: 7,
      servers: [{ ...server('up', 7, 2, 0), total: 70, health: { healthy: true, passes: 4 } }],
    },
  });
});

test('values the workers disagree on are listed per worker, in worker order', () => {
  const merged = mergeStats([[server('up', 1, 1, 0)], [server('down', 1, 1, 500)]]) as Record<
    string,
    unknown
  >[];
  assert.deepEqual(merged[0]?.state, ['up', 'down']);
  assert.deepEqual((merged[0]?.health as Record<string, unknown> | undefined)?.healthy, [true, false]);
  assert.equal(merged[0]?.down_for_ms, 500);
  assert.equal(merged[0]?.weight, 3);
});

test('records in lists are matched by address, then name; a record only one worker has is kept', () => {
  const merged = mergeStats([
    [
      { address: 'b', active: 1 },
      { address: 'a', active: 1 },
    ],
    [
      { address: 'a', active: 2 },
      { address: 'c', active: 4 },
    ],
  ]);
  assert.deepEqual(merged, [
    { address: 'b', active: 1 },
    { address: 'a', active: 3 },
    { address: 'c', active: 4 },
  ]);
  assert.deepEqual(mergeStats([[{ name: 'old', active: 1 }], [{ name: 'old', active: 2 }]]), [
    { name: 'old', active: 3 },
  ]);
  assert.deepEqual(mergeStats([{ web: { active: 1 } }, undefined]), { web: { active: 1 } });
  assert.equal(mergeStats([]), undefined);
});
