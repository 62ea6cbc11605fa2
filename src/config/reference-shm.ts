/** The `shm` section of the config reference (`reference.ts`, which it is part of). */
import type { KeyDoc } from './reference.js';

export const SHM_REFERENCE = {
  shm: {
    doc: 'Shared-memory bridges with C programs (docs/SHM.md). Linux in this build; elsewhere `run` refuses them with `ZL_SHM_UNAVAILABLE`.',
  },
  'shm[]': { doc: 'One bridge: a POSIX shared-memory segment and its `/shm` HTTP API.' },
  'shm[].name': {
    doc: 'Bridge name: served at `/shm/NAME` (and `/shm` when it is the only one on its address).',
  },
  'shm[].segment': {
    doc: 'POSIX shared-memory name (`/zipline-telemetry`), as C programs pass to `zl_shm_open`.',
  },
  'shm[].snapshot_capacity': {
    default: '64KiB',
    doc: 'Largest snapshot (POST body) in bytes; 1 B – 256 MiB.',
  },
  'shm[].upload_buffer': {
    default: '64MiB',
    doc: 'Bytes the `/shm` POST bodies being received for this bridge may hold at once (snapshots and messages are read whole before they are written); a POST that would pass it gets 503 `ZL_SHM_BUSY` + `Retry-After`. Never below `snapshot_capacity`: one full snapshot always fits.',
  },
  'shm[].slots': { default: 1024, doc: 'Slots per ring (C→Node and Node→C), a power of two, 2 – 1,048,576.' },
  'shm[].slot_size': {
    default: '4KiB',
    doc: 'Bytes per ring slot including its 16-byte prefix (a message holds slot_size − 16); a multiple of 16.',
  },
  'shm[].http': {
    default: '127.0.0.1:8090',
    doc: 'Address of the `/shm` HTTP API (loopback by default). Bridges with the same address share one server. The API has no authentication: bound beyond loopback, `run` logs a warning.',
  },
  'shm[].max_connections': {
    default: 1024,
    doc: 'Connections the `/shm` HTTP API at this bridge\'s `http` address holds at once (long polls and event streams included; bridges sharing an address: the largest of theirs); more are closed at once, counted as `ZL_LISTENER_OVER_LIMIT` in `zipline_downstream_rejected_total{listener="shm.http"}` and logged as a warning at most every 10 s.',
  },
  'shm[].create': {
    default: true,
    doc: 'Create the segment when missing (else attach only). An existing segment must have the same sizes.',
  },
  'shm[].mode': { default: '0600', doc: 'Permissions of a segment zipline creates.' },
  'shm[].allow_other_owner': {
    default: false,
    doc: "Serve a segment another user owns. Off by default: an existing segment must belong to zipline's own user, else `run` refuses it (`ZL_SHM_ATTACH`): `/dev/shm` is writable by every local user, who could create the name first (or while zipline follows it) and read or feed what zipline serves. Turn it on when the C program runs as another user and creates the segment itself (with a `mode` that lets zipline in).",
  },
  'shm[].wake': {
    default: 'futex',
    doc: "`futex`: two native threads sleep on the segment's wake-up words and post to the event loop (0 % CPU idle; ~20 µs C→Node). `poll`: the event loop checks the segment on every turn (`setImmediate`), for a spare core: ~2 µs C→Node, and the process stays busy.",
  },
  'shm[].remove_on_exit': {
    default: false,
    doc: 'Remove the segment when zipline exits (else it stays for the C side; `zipline shm rm NAME` removes it).',
  },
} as const satisfies Record<string, KeyDoc>;
