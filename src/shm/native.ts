/**
 * The shared-memory addon (native/addon/shm_addon.c, built by `npm install` on Linux). Loading
 * it elsewhere, or when the build failed, throws one clear `ZL_SHM_UNAVAILABLE`; nothing else
 * in zipline depends on it.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { ZiplineError } from '../errors.js';

/** An opened segment (an N-API external). */
export type ShmHandle = { readonly __shm: unique symbol };

export interface ShmBinding {
  open(
    name: string,
    create: boolean,
    mode: number,
    capacity: number,
    slots: number,
    slotSize: number,
    /** The observer role: takes no ring end and stamps no pid (inspection). */
    observe: boolean,
    /** Serving: accept a segment owned by another user (else EOWNER). */
    allowOtherOwner: boolean,
  ): ShmHandle;
  /** [version, data] or null before the first write. */
  snapshotRead(h: ShmHandle): [number, Buffer] | null;
  /** The new version; `expected` < 0 writes unconditionally. Throws an error whose code is the library's. */
  snapshotWrite(h: ShmHandle, data: Buffer, expected: number): number;
  /** 0, or a negative library code (EFULL, ETOOBIG). */
  send(h: ShmHandle, data: Buffer): number;
  /** [sequence, data] of the next C → Node message, or null. */
  recv(h: ShmHandle): [number, Buffer] | null;
  /** [first sequence, count, buffer of (u32 LE length, bytes)…] of every waiting message that fits, or null. */
  recvBatch(h: ShmHandle, maxBytes: number): [number, number, Buffer] | null;
  stats(h: ShmHandle): number[];
  /** True once the segment was truncated under us (a SIGBUS caught): reads and writes then answer ECORRUPT. */
  lost(h: ShmHandle): boolean;
  /** C → Node ring slots skipped as malformed so far (a wrong `seq`, a length over the slot, an impossible head). */
  corrupt(h: ShmHandle): number;
  /** The published snapshot version (0 before the first write), without copying it. */
  version(h: ShmHandle): number;
  /** Checks the segment in a tight native loop for up to `us` µs: bit 1 snapshot ≠ `version`, bit 2 messages; 4 alone: the segment is lost. */
  spin(h: ShmHandle, version: number, us: number): number;
  /** JavaScript drained the C → Node ring (`wake: futex`): the ring waiter stops napping. */
  caughtUp(h: ShmHandle): void;
  /** Starts the waiter threads; `onWake(1)` after a new snapshot, `onWake(2)` after C → Node messages, `onWake(3)` once when the segment is lost. */
  watch(h: ShmHandle, onWake: (kind: number) => void): void;
  close(h: ShmHandle): void;
  unlink(name: string): number;
}

let cached: ShmBinding | null = null;

export function loadShm(): ShmBinding {
  if (cached !== null) return cached;
  if (process.platform !== 'linux') {
    throw new ZiplineError(
      'ZL_SHM_UNAVAILABLE',
      `shared-memory bridges need Linux in this build (running on ${process.platform}); see docs/SHM.md for the Windows design`,
    );
  }
  try {
    const require = createRequire(import.meta.url);
    const path = fileURLToPath(new URL('../../../build/Release/zipline_shm.node', import.meta.url));
    cached = require(path) as ShmBinding;
    return cached;
  } catch (err) {
    throw new ZiplineError(
      'ZL_SHM_UNAVAILABLE',
      `the shared-memory addon is not built (run npm install with a C compiler): ${(err as Error).message}`,
    );
  }
}

/** The library's numeric code of an error thrown by the addon (NaN when it is not one). */
export function shmCode(err: unknown): number {
  return Number((err as { code?: unknown }).code);
}
