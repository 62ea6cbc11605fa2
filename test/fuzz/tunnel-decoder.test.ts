/**
 * Fuzz: 1,000,000 inputs into the MS frame decoder — valid sessions mutated (bit flips, byte
 * changes, truncations, splices, random bytes, random feed splits). Every input either decodes or
 * throws a TunnelProtocolError; nothing else escapes, nothing hangs, nothing allocates past the
 * length limit (the limit is checked before allocation). Where the native tunnel engine is built,
 * its decoder (native/tunnel/session.c frame_check) takes every input too, split the same way, and
 * must reach the same verdict: as many frames, and the same GOAWAY code at the same point.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FLAG, FRAME } from '../../src/tunnel/constants.js';
import { encodeFrame, FrameDecoder, TunnelProtocolError } from '../../src/tunnel/frame.js';
import { engine } from '../../src/tunnel/native/binding.js';
import { rng } from '../helpers/rng.js';

const INPUTS = Number(process.env.FUZZ_TUNNEL ?? 1_000_000);

const native = engine.binding;

test(`tunnel frame decoder: ${INPUTS.toLocaleString('en')} mutated inputs, only coded errors${native ? '; the native decoder agrees on each' : ''}`, () => {
  const r = rng(2026);
  const seeds = [
    Buffer.concat([
      encodeFrame(FRAME.OPEN, 0, 1, Buffer.from([1, 1, 127, 0, 0, 1, 0, 80])),
      encodeFrame(FRAME.DATA, FLAG.FIN, 1, Buffer.from('GET / HTTP/1.1\r\n\r\n')),
    ]),
    encodeFrame(FRAME.WINDOW_UPDATE, 0, 0, Buffer.from([0, 1, 0, 0])),
    encodeFrame(FRAME.PING, FLAG.ACK, 0, Buffer.from('12345678')),
    encodeFrame(FRAME.GOAWAY, 0, 0, Buffer.alloc(12)),
    encodeFrame(0x99, 0, 0, Buffer.from('ext')),
  ];
  let decoded = 0;
  let errors = 0;
  for (let n = 0; n < INPUTS; n++) {
    const seed = seeds[n % seeds.length] as Buffer;
    let input: Buffer;
    const kind = n % 5;
    if (kind === 0) {
      input = Buffer.from(seed);
      const at = Math.floor(r() * input.length);
      input[at] = (input[at] as number) ^ (1 << Math.floor(r() * 8));
    } else if (kind === 1) {
      input = Buffer.from(seed);
      input[Math.floor(r() * input.length)] = Math.floor(r() * 256);
    } else if (kind === 2) {
      input = seed.subarray(0, Math.floor(r() * seed.length));
    } else if (kind === 3) {
      const other = seeds[Math.floor(r() * seeds.length)] as Buffer;
      input = Buffer.concat([
        seed.subarray(0, Math.floor(r() * seed.length)),
        other.subarray(Math.floor(r() * other.length)),
      ]);
    } else {
      input = Buffer.from(Array.from({ length: 1 + Math.floor(r() * 40) }, () => Math.floor(r() * 256)));
    }
    let frames = 0;
    const d = new FrameDecoder(() => {
      frames++;
    });
    const cut = Math.floor(r() * (input.length + 1));
    let code = 0;
    try {
      d.feed(input.subarray(0, cut));
      d.feed(input.subarray(cut));
    } catch (err) {
      if (!(err instanceof TunnelProtocolError)) throw err;
      errors++;
      code = err.code;
    }
    decoded += frames;
    if (native !== null) {
      const [nFrames, nCode] = native.checkFrames(input, 16384, cut);
      if (nFrames !== frames || nCode !== code)
        assert.fail(
          `input ${n} (${input.toString('hex')}, cut ${cut}): JavaScript ${frames} frames, code ${code}; native ${nFrames}, ${nCode}`,
        );
    }
  }
  assert.ok(decoded > 0 && errors > 0, `decoded ${decoded}, errors ${errors}`);
});
