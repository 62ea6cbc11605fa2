/** The accelerated CRC-32 (native/crc/crc32_core.c) is zlib.crc32, byte for byte. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { crc32, crcAccelerated } from '../../src/tunnel/crc.js';

test('crc32 equals zlib.crc32 for every length 0–3000, unaligned views and frame-sized buffers', (t) => {
  t.diagnostic(`accelerated: ${crcAccelerated}`);
  const b = randomBytes(70_000);
  for (let n = 0; n <= 3000; n++)
    assert.equal(crc32(b.subarray(0, n)), zlibCrc32(b.subarray(0, n)), `length ${n}`);
  for (let off = 1; off < 16; off++) {
    const v = b.subarray(off, off + 16_384 - off);
    assert.equal(crc32(v), zlibCrc32(v), `offset ${off}`);
  }
  assert.equal(crc32(b.subarray(0, 65_536)), zlibCrc32(b.subarray(0, 65_536)));
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
  if (process.platform === 'linux' && process.arch === 'x64' && process.env.ZIPLINE_NO_NATIVE !== '1')
    assert.equal(crcAccelerated, true, 'built at npm install');
});
