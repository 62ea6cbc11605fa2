/**
 * StallClock: which deadline a waiting or streaming exchange meets, and when. Times are plain
 * numbers (ms); the first look at a mark starts its clock.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StallClock } from '../../src/http/stall-clock.js';

type Args = { clientIdle: number; header: number; idle: number; held: boolean };

/** The first time (from 0, in ms steps) `due` answers for a mark that never moves, and what. */
function firstDue(phase: 'waiting' | 'streaming', a: Args, sentAt = 0): [number, string] | null {
  const clock = new StallClock();
  clock.requestSentAt = sentAt;
  for (let now = 1; now <= 5000; now++) {
    const code = clock.due(phase, 7, now, a.clientIdle, a.header, a.idle, a.held);
    if (code !== null) return [now - 1, code];
  }
  return null;
}

test('a request body the client does not send: client_idle, the client blamed (408)', () => {
  assert.deepEqual(firstDue('waiting', { clientIdle: 1000, header: 300, idle: 200, held: false }), [
    1000,
    'ZL_HTTP_BODY_TIMEOUT',
  ]);
});

test("a request body the upstream does not take: the upstream's idle (504); with idle 0, still client_idle", () => {
  assert.deepEqual(firstDue('waiting', { clientIdle: 1000, header: 300, idle: 200, held: true }), [
    200,
    'ZL_UPSTREAM_IDLE_TIMEOUT',
  ]);
  assert.deepEqual(firstDue('waiting', { clientIdle: 1000, header: 300, idle: 0, held: true }), [
    1000,
    'ZL_UPSTREAM_IDLE_TIMEOUT',
  ]);
});

test('the request sent: response_header from then; streaming: idle, and idle 0 never', () => {
  assert.deepEqual(firstDue('waiting', { clientIdle: 1000, header: 300, idle: 200, held: true }, 1), [
    300,
    'ZL_UPSTREAM_RESPONSE_TIMEOUT',
  ]);
  assert.deepEqual(firstDue('streaming', { clientIdle: 1000, header: 300, idle: 200, held: false }), [
    200,
    'ZL_UPSTREAM_IDLE_TIMEOUT',
  ]);
  assert.equal(firstDue('streaming', { clientIdle: 1000, header: 300, idle: 0, held: false }), null);
});

test("a response the client does not take: client_idle, the client blamed; with client_idle 0, the upstream's idle", () => {
  assert.deepEqual(firstDue('streaming', { clientIdle: 1000, header: 300, idle: 200, held: true }), [
    1000,
    'ZL_CLIENT_IDLE_TIMEOUT',
  ]);
  assert.deepEqual(firstDue('streaming', { clientIdle: 0, header: 300, idle: 200, held: true }), [
    200,
    'ZL_CLIENT_IDLE_TIMEOUT',
  ]);
  assert.equal(firstDue('streaming', { clientIdle: 0, header: 300, idle: 0, held: true }), null);
});
