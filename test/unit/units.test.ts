import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  formatDuration,
  parseDuration,
  parseHostPort,
  parsePercent,
  parseSize,
} from '../../src/config/units.js';

test('durations', () => {
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('3s'), 3000);
  assert.equal(parseDuration('1.5m'), 90_000);
  assert.equal(parseDuration('2h'), 7_200_000);
  assert.equal(parseDuration('0'), 0);
  for (const bad of ['5sec', '10', '-1s', 's', '', '1 s s']) assert.equal(parseDuration(bad), undefined, bad);
  // printed as a config would write them, and read back the same
  for (const [ms, text] of [
    [0, '0'],
    [250, '250ms'],
    [1500, '1500ms'],
    [30_000, '30s'],
    [90_000, '90s'],
    [120_000, '2m'],
    [7_200_000, '2h'],
  ] as const) {
    assert.equal(formatDuration(ms), text);
    assert.equal(parseDuration(text), ms);
  }
});

test('sizes', () => {
  assert.equal(parseSize('16KiB'), 16384);
  assert.equal(parseSize('8MiB'), 8 * 1024 * 1024);
  assert.equal(parseSize('512'), 512);
  assert.equal(parseSize('1GB'), 1e9);
  assert.equal(parseSize('lots'), undefined);
});

test('percent', () => {
  assert.equal(parsePercent('20%'), 0.2);
  assert.equal(parsePercent('120%'), undefined);
  assert.equal(parsePercent('20'), undefined);
});

test('host:port', () => {
  assert.deepEqual(parseHostPort('127.0.0.1:9001'), { host: '127.0.0.1', port: 9001 });
  assert.deepEqual(parseHostPort('[::1]:80'), { host: '::1', port: 80 });
  assert.deepEqual(parseHostPort(':8080'), { host: '0.0.0.0', port: 8080 });
  assert.deepEqual(parseHostPort('backend.internal:0'), { host: 'backend.internal', port: 0 });
  for (const bad of ['127.0.0.1', '::1:80', 'host:99999', 'host:x', 'a b:1']) {
    assert.equal(parseHostPort(bad), undefined, bad);
  }
});
