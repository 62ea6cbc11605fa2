/**
 * The TypeScript mirror of the shared-memory layout equals the C header: a C program prints
 * every offset and size with offsetof/sizeof and the error codes; this compares them.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  CONSUMER,
  IDENTITY,
  PRODUCER,
  RING_BASES,
  SHM_BLOCK,
  SHM_ERRORS,
  SHM_HEADER_SIZE,
  SHM_MAGIC,
  SHM_PREFIX,
  SHM_VERSION,
  SLOT,
  SNAPSHOT,
  SNAPSHOT_BUFFER,
} from '../../src/shm/layout.js';
import { tempDir } from '../helpers/temp.js';
import { ROOT } from '../helpers/zipline.js';

const C_PROGRAM = `
#include <stdio.h>
#include <stddef.h>
#include "zipline_shm.h"
#define F(T, f) printf("\\"%s.%s\\":%zu,", #T, #f, offsetof(T, f));
int main(void) {
  printf("{");
  F(zl_shm_identity, magic) F(zl_shm_identity, version) F(zl_shm_identity, header_size)
  F(zl_shm_identity, snapshot_capacity) F(zl_shm_identity, ring_slots) F(zl_shm_identity, ring_slot_size)
  F(zl_shm_identity, creator_pid) F(zl_shm_identity, total_size) F(zl_shm_identity, created_unix_ms)
  F(zl_shm_identity, snapshot_offset) F(zl_shm_identity, snapshot_stride) F(zl_shm_identity, ring_c2n_offset)
  F(zl_shm_identity, ring_n2c_offset)
  F(zl_shm_snapshot_writer, lock) F(zl_shm_snapshot_writer, notify) F(zl_shm_snapshot_writer, lock_start)
  F(zl_shm_snapshot_writer, version) F(zl_shm_snapshot_writer, active) F(zl_shm_snapshot_writer, steals)
  F(zl_shm_snapshot_writer, writes)
  F(zl_shm_ring_producer, head) F(zl_shm_ring_producer, notify) F(zl_shm_ring_producer, pid)
  F(zl_shm_ring_producer, dropped) F(zl_shm_ring_producer, heartbeat_ms)
  F(zl_shm_ring_consumer, tail) F(zl_shm_ring_consumer, waiting) F(zl_shm_ring_consumer, pid)
  F(zl_shm_ring_consumer, heartbeat_ms)
  F(zl_shm_header, snap) F(zl_shm_header, c2n_prod) F(zl_shm_header, c2n_cons) F(zl_shm_header, n2c_prod)
  F(zl_shm_header, n2c_cons)
  F(zl_shm_snapshot_buffer, seq) F(zl_shm_snapshot_buffer, len) F(zl_shm_snapshot_buffer, version)
  F(zl_shm_slot, len) F(zl_shm_slot, seq)
  printf("\\"header\\":%zu,\\"prefix\\":%u,\\"block\\":%u,\\"version\\":%u,", sizeof(zl_shm_header), ZL_SHM_PREFIX, ZL_SHM_BLOCK, ZL_SHM_VERSION);
  printf("\\"magic\\":\\"");
  for (int i = 0; i < 8; i++) printf("%02x", (unsigned char)ZL_SHM_MAGIC[i]);
  printf("\\",\\"errors\\":[%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d]}\\n", ZL_SHM_OK, ZL_SHM_ENOENT, ZL_SHM_EMAGIC,
    ZL_SHM_EVERSION, ZL_SHM_ESIZE, ZL_SHM_ETOOBIG, ZL_SHM_EBUSY, ZL_SHM_EFULL, ZL_SHM_EEMPTY, ZL_SHM_ETIMEDOUT,
    ZL_SHM_ETRUNC, ZL_SHM_EINVAL, ZL_SHM_ESYS, ZL_SHM_ECONFLICT, ZL_SHM_ECORRUPT);
  return 0;
}
`;

test('src/shm/layout.ts matches native/include/zipline_shm.h (compiled)', () => {
  const dir = tempDir('zl-layout-');
  try {
    writeFileSync(join(dir, 'layout.c'), C_PROGRAM);
    execFileSync('cc', [
      '-std=c11',
      '-I',
      join(ROOT, 'native/include'),
      join(dir, 'layout.c'),
      '-o',
      join(dir, 'layout'),
    ]);
    const c = JSON.parse(execFileSync(join(dir, 'layout'), { encoding: 'utf8' })) as Record<string, unknown>;
    for (const [k, v] of Object.entries(IDENTITY))
      assert.equal(c[`zl_shm_identity.${k}`], v, `identity.${k}`);
    for (const [k, v] of Object.entries(SNAPSHOT))
      assert.equal(Number(c[`zl_shm_snapshot_writer.${k}`]) + 128, v, `snapshot.${k}`);
    for (const [k, v] of Object.entries(PRODUCER))
      assert.equal(c[`zl_shm_ring_producer.${k}`], v, `producer.${k}`);
    for (const [k, v] of Object.entries(CONSUMER))
      assert.equal(c[`zl_shm_ring_consumer.${k}`], v, `consumer.${k}`);
    for (const [k, v] of Object.entries(RING_BASES)) assert.equal(c[`zl_shm_header.${k}`], v, `header.${k}`);
    assert.equal(c['zl_shm_header.snap'], SNAPSHOT.lock);
    for (const [k, v] of Object.entries(SNAPSHOT_BUFFER))
      assert.equal(c[`zl_shm_snapshot_buffer.${k}`], v, `snapshot buffer.${k}`);
    for (const [k, v] of Object.entries(SLOT)) assert.equal(c[`zl_shm_slot.${k}`], v, `slot.${k}`);
    assert.equal(c.header, SHM_HEADER_SIZE);
    assert.equal(c.prefix, SHM_PREFIX);
    assert.equal(c.block, SHM_BLOCK);
    assert.equal(c.version, SHM_VERSION);
    assert.equal(c.magic, SHM_MAGIC.toString('hex'));
    assert.deepEqual(c.errors, Object.values(SHM_ERRORS));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
