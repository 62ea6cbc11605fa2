/**
 * The TypeScript mirrors of the native parts' enums must equal the C ones: a mismatch would
 * misroute commands and events without any error. The pump (native/pump/) and the tunnel engine
 * (native/tunnel/tunnel.h), whose wire constants must also equal src/tunnel/constants.ts (the
 * spec's). Reads the C sources; needs no compiler.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CMD, EV, IDLE_UNREAD, PUMP_REASON, UDP_END } from '../../src/l4/native-pump.js';
import {
  CRC_SIZE,
  ERROR,
  FIRST_EXTENSION_TYPE,
  FLAG,
  FRAME,
  FRAME_OVERHEAD,
  HEADER_SIZE,
  MAGIC,
  MAX_CONTROL_PAYLOAD,
  MAX_WINDOW_DELTA,
} from '../../src/tunnel/constants.js';
import { C, DONE, SLOT_TYPES, EV as TEV } from '../../src/tunnel/native/binding.js';
import { ROOT } from '../helpers/zipline.js';

/** Every `NAME = value` or implicit successor inside the enum that contains `first`. */
function cEnum(file: string, first: string): Map<string, number> {
  const text = readFileSync(join(ROOT, file.includes('/') ? file : `native/pump/${file}`), 'utf8');
  const at = text.indexOf(first);
  assert.ok(at >= 0, `${first} in ${file}`);
  const body = text
    .slice(text.lastIndexOf('enum {', at) + 6, text.indexOf('}', at))
    .replace(/\/\*[\s\S]*?\*\//g, ''); // comments may hold commas
  const out = new Map<string, number>();
  let next = 0;
  for (const item of body.split(',')) {
    const m = /([A-Z_][A-Z0-9_]*)\s*(?:=\s*(0x[0-9A-Fa-f]+|\d+))?/.exec(item);
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
    clientIdle: 'R_CLIENT_IDLE',
  };
  for (const [k, v] of Object.entries(PUMP_REASON)) {
    if (k !== 'clientIdle') assert.equal(tcp.get(names[k as keyof typeof names]), v, k);
  }
  // HTTP body jobs report with the same numbers (body.c: B_DONE …), and one of their own
  const body = cEnum('body.c', 'B_DONE');
  for (const [k, v] of Object.entries(PUMP_REASON))
    assert.equal(body.get(names[k as keyof typeof names].replace('R_', 'B_')), v, k);
  assert.equal(body.size, Object.keys(PUMP_REASON).length);
  assert.equal(tcp.has('R_CLIENT_IDLE'), false, 'body jobs only');
  // R_IDLE's second word
  const unread = cEnum('pump.c', 'UNREAD_A');
  assert.deepEqual(Object.fromEntries(unread), { UNREAD_A: IDLE_UNREAD.a, UNREAD_B: IDLE_UNREAD.b });
  assert.equal([...tcp.values()].includes(PUMP_REASON.clientIdle), false, 'a number no TCP pump uses');
  const udp = cEnum('udp.c', 'END_RESPONSES');
  for (const [k, v] of Object.entries(UDP_END)) assert.equal(udp.get(`END_${k.toUpperCase()}`), v, k);
  assert.equal(udp.size, Object.keys(UDP_END).length);
});

const TUNNEL_H = 'native/tunnel/tunnel.h';

test('tunnel engine: commands, events and end reasons match tunnel.h', () => {
  const cmds = cEnum(TUNNEL_H, 'C_START');
  for (const [k, v] of Object.entries(C)) assert.equal(cmds.get(camelToC('C_', k)), v, k);
  assert.equal(cmds.size, Object.keys(C).length);
  const evs = cEnum(TUNNEL_H, 'EV_TLS_DONE');
  for (const [k, v] of Object.entries(TEV)) assert.equal(evs.get(camelToC('EV_', k)), v, k);
  assert.equal(evs.size, Object.keys(TEV).length);
  const done = cEnum(TUNNEL_H, 'D_DONE');
  for (const [k, v] of Object.entries(DONE)) assert.equal(done.get(camelToC('D_', k)), v, k);
  assert.equal(done.size, Object.keys(DONE).length);
});

test('tunnel engine: wire constants match src/tunnel/constants.ts (the spec)', () => {
  const frames = cEnum(TUNNEL_H, 'F_HELLO');
  for (const [k, v] of Object.entries(FRAME)) assert.equal(frames.get(`F_${k}`), v, k);
  assert.equal(frames.size, Object.keys(FRAME).length);
  const flags = cEnum(TUNNEL_H, 'FLAG_FIN');
  for (const [k, v] of Object.entries(FLAG)) assert.equal(flags.get(`FLAG_${k}`), v, k);
  const errors = cEnum(TUNNEL_H, 'E_NO_ERROR');
  for (const [k, v] of Object.entries(ERROR)) assert.equal(errors.get(`E_${k}`), v, k);
  assert.equal(errors.size, Object.keys(ERROR).length);
  const layout = cEnum(TUNNEL_H, 'MAGIC');
  assert.equal(layout.get('MAGIC'), MAGIC);
  assert.equal(layout.get('HEADER_SIZE'), HEADER_SIZE);
  assert.equal(layout.get('CRC_SIZE'), CRC_SIZE);
  assert.equal(layout.get('FRAME_OVERHEAD'), FRAME_OVERHEAD);
  assert.equal(layout.get('MAX_CONTROL_PAYLOAD'), MAX_CONTROL_PAYLOAD);
  assert.equal(layout.get('FIRST_EXTENSION_TYPE'), FIRST_EXTENSION_TYPE);
  const h = readFileSync(join(ROOT, TUNNEL_H), 'utf8');
  assert.equal(Number(/#define MAX_WINDOW_DELTA (0x[0-9a-f]+)u/.exec(h)?.[1]), MAX_WINDOW_DELTA);
});

test("tunnel engine: the stats counters' slots (session.c frame_index) name the frame types binding.ts says", () => {
  const text = readFileSync(join(ROOT, 'native/tunnel/session.c'), 'utf8');
  const body = text.slice(text.indexOf('int frame_index(int type)'), text.indexOf('static int core_type'));
  const slots = new Map<number, number>();
  for (const m of body.matchAll(/case F_([A-Z_]+): return (\d+);/g))
    slots.set(Number(m[2]), FRAME[m[1] as keyof typeof FRAME]);
  assert.equal(slots.size, SLOT_TYPES.length - 1);
  for (const [slot, type] of slots) assert.equal(SLOT_TYPES[slot], type, `slot ${slot}`);
});
