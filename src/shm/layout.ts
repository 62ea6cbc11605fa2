/**
 * The shared-memory layout (version 1), mirrored from native/include/zipline_shm.h. Byte
 * offsets from the start of the segment; little-endian. test/unit/shm-layout.test.ts compiles
 * the C header and checks every value here against `offsetof`/`sizeof`.
 */
export const SHM_MAGIC = Buffer.from('ZLSHM\0\0\x01', 'latin1');
export const SHM_VERSION = 1;
export const SHM_HEADER_SIZE = 4096;
export const SHM_BLOCK = 128;
/** Bytes before the data of each snapshot buffer and each ring slot. */
export const SHM_PREFIX = 16;

/**
 * What zipline creates segments with (config and `zipline shm create`): the library's u32 fields
 * hold more, but a segment is two snapshots and two rings in memory.
 */
export const SHM_LIMITS = {
  capacity: { min: 1, max: 256 * 1024 * 1024, text: 'snapshot_capacity: 1 B – 256 MiB' },
  slots: { min: 2, max: 1 << 20, text: 'slots: a power of two, 2 – 1,048,576' },
  slotSize: { min: 32, max: 1 << 20, text: 'slot_size: 32 B – 1 MiB, a multiple of 16' },
} as const;

/** The problems with a layout (empty when it is one zipline creates). */
export function shmLayoutProblems(capacity: number, slots: number, slotSize: number): string[] {
  const out: string[] = [];
  const l = SHM_LIMITS;
  if (!Number.isInteger(capacity) || capacity < l.capacity.min || capacity > l.capacity.max)
    out.push(l.capacity.text);
  if (!Number.isInteger(slots) || slots < l.slots.min || slots > l.slots.max || (slots & (slots - 1)) !== 0)
    out.push(l.slots.text);
  if (
    !Number.isInteger(slotSize) ||
    slotSize < l.slotSize.min ||
    slotSize > l.slotSize.max ||
    slotSize % 16 !== 0
  )
    out.push(l.slotSize.text);
  return out;
}

/** Block 0: identity, written once by the creator. */
export const IDENTITY = {
  magic: 0,
  version: 8,
  header_size: 12,
  snapshot_capacity: 16,
  ring_slots: 20,
  ring_slot_size: 24,
  creator_pid: 28,
  total_size: 32,
  created_unix_ms: 40,
  snapshot_offset: 48,
  snapshot_stride: 56,
  ring_c2n_offset: 64,
  ring_n2c_offset: 72,
} as const;

/** Block 1: the snapshot writers' side. */
export const SNAPSHOT = {
  lock: 128,
  notify: 132,
  lock_start: 136,
  version: 144,
  active: 152,
  steals: 160,
  writes: 168,
} as const;

/** A ring's producer block, relative to its base (C→Node at 256, Node→C at 512). */
export const PRODUCER = { head: 0, notify: 8, pid: 12, dropped: 16, heartbeat_ms: 24 } as const;
/** A ring's consumer block, relative to its base (C→Node at 384, Node→C at 640). */
export const CONSUMER = { tail: 0, waiting: 8, pid: 12, heartbeat_ms: 16 } as const;

export const RING_BASES = { c2n_prod: 256, c2n_cons: 384, n2c_prod: 512, n2c_cons: 640 } as const;

/** The prefix of each snapshot buffer. */
export const SNAPSHOT_BUFFER = { seq: 0, len: 4, version: 8 } as const;
/** The prefix of each ring slot. */
export const SLOT = { len: 0, seq: 8 } as const;

/** Error codes of the C library (zl_shm_strerror). */
export const SHM_ERRORS = {
  ok: 0,
  enoent: -1,
  emagic: -2,
  eversion: -3,
  esize: -4,
  etoobig: -5,
  ebusy: -6,
  efull: -7,
  eempty: -8,
  etimedout: -9,
  etrunc: -10,
  einval: -11,
  esys: -12,
  econflict: -13,
  ecorrupt: -14,
} as const;
