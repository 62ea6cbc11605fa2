/**
 * The TypeScript mirrors of the native data path's enums must equal the C ones: a mismatch would
 * misroute commands and events without any error. Reads the C sources; needs no compiler.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CMD, EV, PUMP_REASON, UDP_END } from '../../src/l4/native-pump.js';
import { ROOT } from '../helpers/zipline.js';

/** Every `NAME = value` or implicit successor inside the enum that contains `first`. */
function cEnum(file: string, first: string): Map<string, number> {
  const text = readFileSync(join(ROOT, 'native/pump', file), 'utf8');
  const at = text.indexOf(first);
  assert.ok(at >= 0, `${first} in ${file}`);
  const body = text.slice(text.lastIndexOf('enum {', at) + 6, text.indexOf('}', at));
  const out = new Map<string, number>();
  let next = 0;
  for (const item of body.split(',')) {
    const m = /([A-Z_][A-Z0-9_]*)\s*(?:=\s*(\d+))?/.exec(item.replace(/\/\*.*?\*\//g, ''));
    if (m === null) continue;
    const value = m[2] === undefined ? next : Number(m[2]);
    out.set(m[1] as string, value);
    next = value + 1;
  }
  return out;
}

function camelToC(prefix: string, key: string): string {
  return `${prefix}${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

test('command and event numbers match pump.h', () => {
  const cmds = cEnum('pump.h', 'CMD_TCP_ADD');
  for (const [k, v] of Object.entries(CMD)) assert.equal(cmds.get(camelToC('CMD_', k)), v, k);
  assert.equal(cmds.size, Object.keys(CMD).length);
  const evs = cEnum('pump.h', 'EV_TCP_DONE');
  for (const [k, v] of Object.entries(EV)) assert.equal(evs.get(camelToC('EV_', k)), v, k);
  assert.equal(evs.size, Object.keys(EV).length);
});

test('completion reasons match pump.c, body.c and udp.c', () => {
  const tcp = cEnum('pump.c', 'R_DONE');
  const names: Record<keyof typeof PUMP_REASON, string> = {
    done: 'R_DONE',
    errorA: 'R_ERR_A',
    errorB: 'R_ERR_B',
    idle: 'R_IDLE',
    cancel: 'R_CANCEL',
    setup: 'R_SETUP',
  };
  for (const [k, v] of Object.entries(PUMP_REASON))
    assert.equal(tcp.get(names[k as keyof typeof names]), v, k);
  // HTTP body jobs report with the same numbers (body.c: B_DONE …)
  const body = cEnum('body.c', 'B_DONE');
  for (const [k, v] of Object.entries(PUMP_REASON))
    assert.equal(body.get(names[k as keyof typeof names].replace('R_', 'B_')), v, k);
  const udp = cEnum('udp.c', 'END_RESPONSES');
  for (const [k, v] of Object.entries(UDP_END)) assert.equal(udp.get(`END_${k.toUpperCase()}`), v, k);
  assert.equal(udp.size, Object.keys(UDP_END).length);
});
