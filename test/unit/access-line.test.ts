/** The access log's hand-written JSON pieces write what JSON.stringify writes, on hostile input. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isoNow, jsonNumber, jsonString } from '../../src/log/access-line.js';

test('jsonString is JSON.stringify for every kind of string a client can send', () => {
  const strings = [
    '',
    '/ok',
    'GET',
    'a"b',
    'a\\b',
    '\\',
    '"',
    'tab\there',
    'nl\nx\r',
    '\u0000\u0001\u001f\u007f',
    ' ~!#[]',
    'caf\u00e9', // a latin1-decoded byte above 0x7f
    '\u2028\u2029',
    '\ud800', // a lone surrogate: JSON.stringify escapes it
    '\udfff\ud800',
    '😀',
    `/p?q=${'x'.repeat(5000)}`,
  ];
  // and every single code unit below 0x100
  for (let c = 0; c < 0x100; c++) strings.push(`a${String.fromCharCode(c)}b`);
  for (const s of strings) assert.equal(jsonString(s), JSON.stringify(s), JSON.stringify(s));
  assert.equal(jsonString(null), 'null');
});

test('jsonNumber is JSON.stringify for numbers, null for what JSON has no number for', () => {
  for (const n of [0, -0, 1, 0.005262643000000025, 1e21, 1e-7, -3.5, 2 ** 53, Number.MAX_VALUE]) {
    assert.equal(jsonNumber(n), JSON.stringify(n));
  }
  for (const n of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])
    assert.equal(jsonNumber(n), 'null');
});

test('isoNow is toISOString of now, to the millisecond', () => {
  const before = Date.now();
  const t = Date.parse(isoNow());
  assert.ok(t >= before && t <= Date.now());
  assert.match(isoNow(), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});
