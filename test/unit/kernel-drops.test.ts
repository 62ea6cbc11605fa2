/** Reading the kernel's per-socket UDP drop counts (/proc/net/udp, udp6): addresses and columns. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseDrops, procAddress } from '../../src/l4/kernel-drops.js';

test('local addresses as /proc/net/udp{,6} print them (each 32-bit word in host order)', {
  skip: process.arch === 's390x' ? 'big-endian host' : false,
}, () => {
  assert.equal(procAddress('127.0.0.1', 19202), '0100007F:4B02');
  assert.equal(procAddress('0.0.0.0', 53), '00000000:0035');
  assert.equal(procAddress('10.1.2.3', 65535), '0302010A:FFFF');
  assert.equal(procAddress('::1', 53), '00000000000000000000000001000000:0035');
  assert.equal(procAddress('::', 53), '00000000000000000000000000000000:0035');
  assert.equal(procAddress('2001:db8::7', 8080), 'B80D0120000000000000000007000000:1F90');
  assert.equal(procAddress('::ffff:127.0.0.1', 1), '0000000000000000FFFF00000100007F:0001');
  assert.equal(procAddress('not an address', 1), null);
});

test('drops are summed per local address over the sockets this process holds', () => {
  const table = [
    '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops',
    ' 1: 0100007F:4B02 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 111 2 0000000000000000 1102',
    ' 2: 0100007F:4B02 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 222 2 0000000000000000 5',
    ' 3: 0100007F:4B02 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 333 2 0000000000000000 900',
    ' 4: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 444 2 0000000000000000 7',
    '',
  ].join('\n');
  const drops = new Map<string, number>();
  // 333 is another process's socket on the same address (an SO_REUSEPORT sibling)
  parseDrops(table, new Set(['111', '222', '444']), drops);
  assert.deepEqual(
    [...drops],
    [
      ['0100007F:4B02', 1107],
      ['00000000:0035', 7],
    ],
  );
});
