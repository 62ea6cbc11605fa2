/** Which signals reload and which drain (src/cli/signals.ts), per platform. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { signalPlan } from '../../src/cli/signals.js';

test('Linux and macOS: SIGHUP reloads, SIGTERM and SIGINT drain', () => {
  for (const platform of ['linux', 'darwin'] as const) {
    const plan = signalPlan(platform);
    assert.deepEqual(plan.reload, ['SIGHUP'], platform);
    assert.deepEqual([...plan.drain].sort(), ['SIGINT', 'SIGTERM'], platform);
    assert.deepEqual(plan.drainWithin, {}, `${platform}: drain_timeout as configured`);
  }
});

test('Windows: closing the console (SIGHUP) and Ctrl-Break drain like Ctrl-C; nothing reloads by signal', () => {
  const plan = signalPlan('win32');
  assert.deepEqual(plan.reload, []);
  assert.deepEqual([...plan.drain].sort(), ['SIGBREAK', 'SIGHUP', 'SIGINT', 'SIGTERM']);
  // Windows ends the process ~10 s after its console closed: the drain ends before that
  assert.ok((plan.drainWithin.SIGHUP ?? Number.POSITIVE_INFINITY) < 10_000);
});
