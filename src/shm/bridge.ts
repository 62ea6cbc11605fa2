/**
 * One shared-memory bridge: a segment opened (or created) with the Node role, its snapshot as a
 * versioned latest value, the C → Node ring drained into a bounded replay buffer for SSE
 * subscribers, and sends to C. Wake-ups come from the addon's futex waiter threads, so an idle
 * bridge costs no CPU.
 */
import { ZiplineError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { metrics } from '../metrics/catalog.js';
import { segmentTag } from './etag.js';
import { SHM_ERRORS } from './layout.js';
import { loadShm, type ShmBinding, type ShmHandle, shmCode } from './native.js';
import { SegmentWatch } from './segment-watch.js';
import { UploadBudget } from './upload.js';

export interface ShmBridgeSettings {
  readonly name: string;
  readonly segment: string;
  readonly snapshotCapacity: number;
  /** Bytes the POST bodies being received may hold in all (raised to the snapshot capacity). */
  readonly uploadBuffer: number;
  readonly slots: number;
  readonly slotSize: number;
  readonly create: boolean;
  /** Serve a segment another user owns (else refused: a local user could have planted it). */
  readonly allowOtherOwner?: boolean;
  readonly mode: number;
  readonly removeOnExit: boolean;
  readonly http: string;
  /** `futex`: native waiter threads (idle at 0 % CPU); `poll`: check on every event-loop turn. */
  readonly wake: 'futex' | 'poll';
}

export interface ShmMessage {
  readonly seq: number;
  readonly data: Buffer;
}

/** Messages taken off the ring in one native call: `count` × (u32 LE length, bytes) in `buf`. */
export interface ShmBatch {
  readonly first: number;
  readonly count: number;
  readonly buf: Buffer;
}

/** The messages of a batch (a view per message: made only for consumers that want them). */
export function* messagesOf(batch: ShmBatch): Generator<ShmMessage> {
  let at = 0;
  for (let i = 0; i < batch.count; i++) {
    const len = batch.buf.readUInt32LE(at);
    yield { seq: batch.first + i, data: batch.buf.subarray(at + 4, at + 4 + len) };
    at += 4 + len;
  }
}

type Listener = () => void;

/** The addon's wake-up kinds (native/addon/shm_addon.c). */
const WAKE_MESSAGES = 2;
/** The waiter threads found the segment truncated under us (native/addon/shm_addon.c). */
const WAKE_LOST = 3;
/** `spin`'s answer when the segment is lost. */
const SPIN_LOST = 4;
/** How long one event-loop turn spins on the segment in `wake: poll` (other work runs between turns). */
const POLL_SPIN_US = 50;
/** Bytes taken off the C → Node ring per native call. */
const BATCH_BYTES = 256 * 1024;

export class ShmBridge {
  private readonly binding: ShmBinding;
  private handle: ShmHandle | null = null;
  /** Recent C → Node batches (SSE replay): at least the last `slots` messages, see `recentMessages()`. */
  private readonly recent: ShmBatch[] = [];
  private recentCount = 0;
  private readonly batchListeners = new Set<(b: ShmBatch) => void>();
  private readonly snapshotListeners = new Set<Listener>();
  private readonly messageListeners = new Set<(m: ShmMessage) => void>();
  private lastVersion = 0;
  /** Names the segment attached now among those its name has had, for ETags and SSE ids (etag.ts). */
  tag = '';
  private pollTimer: NodeJS.Immediate | null = null;
  private readonly rx;
  private readonly tx;
  /** Malformed C → Node slots skipped so far (the addon's count), and when that was last logged. */
  private corruptSeen = 0;
  private corruptLoggedAt = 0;
  private lostReported = false;
  /** Serving: follows the segment's name (a peer may remove it and create it again). */
  private watch: SegmentWatch | null = null;
  /** Why the bridge has no segment now (a replaced one it cannot attach to), or null. */
  private detached: ZiplineError | null = null;
  private detachLoggedAt = 0;
  /** The last snapshot read, shared by the readers of its version. */
  private lastRead: { readonly version: number; readonly data: Buffer } | null = null;
  private readonly lostListeners = new Set<() => void>();
  /** What the `/shm` POST bodies being received hold (at least one full snapshot fits). */
  readonly uploads: UploadBudget;

  constructor(
    readonly settings: ShmBridgeSettings,
    private readonly log: Logger | null = null,
  ) {
    this.binding = loadShm();
    this.rx = metrics.shmMessages.labels(settings.name, 'c_to_node');
    this.tx = metrics.shmMessages.labels(settings.name, 'node_to_c');
    this.uploads = new UploadBudget(Math.max(settings.uploadBuffer, settings.snapshotCapacity));
  }

  /**
   * Opens (or creates) the segment. Serving, it takes the Node end of both rings, drains what C
   * sent meanwhile and follows it from then on, and follows its name too (segment-watch.ts);
   * `observe` (`zipline shm create|inspect`) only attaches: it consumes no message and poses as
   * no peer.
   */
  open(mode: 'serve' | 'observe' = 'serve'): void {
    this.attach(mode);
    if (mode === 'observe') return;
    this.watch ??= new SegmentWatch(this.settings.segment, (now) => this.follow(now));
    this.watch.markMapped();
  }

  /**
   * The segment's name names another file now, or none (a peer removed it, and maybe created it
   * again): zipline lets go of the old mapping, which nobody else can reach any more, and attaches
   * to the new file (creating it when `create`). What it cannot attach to (other sizes, or gone
   * with `create: false`) leaves the bridge answering 502 `ZL_SHM_ATTACH` until it can.
   */
  private follow(now: 'replaced' | 'removed'): void {
    if (this.handle === null && now === 'removed' && !this.settings.create) return; // still gone
    if (this.handle !== null) {
      if (this.pollTimer !== null) clearImmediate(this.pollTimer);
      this.pollTimer = null;
      this.binding.close(this.handle);
      this.handle = null;
    }
    // what the old segment carried: its messages, counters and versions were its own
    this.lastRead = null;
    this.recent.length = 0;
    this.recentCount = 0;
    this.corruptSeen = 0;
    this.lostReported = false;
    try {
      this.attach('serve');
    } catch (err) {
      this.detached = err as ZiplineError;
      const at = Date.now();
      if (at - this.detachLoggedAt >= 60_000) {
        this.detachLoggedAt = at;
        this.log?.error(
          {
            shm: this.settings.name,
            segment: this.settings.segment,
            code: 'ZL_SHM_ATTACH',
            reason: this.detached.message,
          },
          `the segment was ${now} by a peer and zipline cannot attach to what is there now: /shm answers 502 until it can (checked each second)`,
        );
      }
      return;
    }
    this.detached = null;
    this.watch?.markMapped();
    this.log?.warn(
      { shm: this.settings.name, segment: this.settings.segment },
      `the segment was ${now} by a peer: zipline now serves the one under its name (${this.settings.create && now === 'removed' ? 'created again' : 'attached'})`,
    );
    for (const l of [...this.snapshotListeners]) l();
  }

  private attach(mode: 'serve' | 'observe'): void {
    const s = this.settings;
    try {
      this.handle = this.binding.open(
        s.segment,
        s.create,
        s.mode,
        s.snapshotCapacity,
        s.slots,
        s.slotSize,
        mode === 'observe',
        s.allowOtherOwner === true,
      );
    } catch (err) {
      // the library's message is in ours (a cause too would print it twice in the log)
      throw new ZiplineError('ZL_SHM_ATTACH', `shm ${s.name} (${s.segment}): ${(err as Error).message}`);
    }
    this.lastVersion = this.binding.version(this.handle);
    const id = this.binding.stats(this.handle);
    this.tag = segmentTag(id[20] ?? 0, id[18] ?? 0);
    if (mode === 'observe') return;
    this.drain();
    if (s.wake === 'poll') this.poll();
    else
      this.binding.watch(this.handle, (kind) => {
        if (kind === WAKE_MESSAGES) {
          this.drain();
          if (this.handle !== null) this.binding.caughtUp(this.handle);
        } else if (kind === WAKE_LOST) this.reportLost();
        else this.onWake();
      });
  }

  /**
   * Busy-poll from the event loop: each turn spins natively for up to POLL_SPIN_US checking the
   * segment, then lets other work run (I/O, timers) before the next turn.
   */
  private poll(): void {
    if (this.handle === null) return;
    const r = this.binding.spin(this.handle, this.lastVersion, POLL_SPIN_US);
    if (r === SPIN_LOST) {
      this.reportLost(); // nothing more to poll
      return;
    }
    if (r & 1) this.onWake();
    else if (r & 2) this.drain();
    this.pollTimer = setImmediate(() => this.poll());
  }

  private get h(): ShmHandle {
    if (this.handle === null)
      throw this.detached ?? new ZiplineError('ZL_SHM_NOT_FOUND', `shm ${this.settings.name} is closed`);
    return this.handle;
  }

  /**
   * The published snapshot. Readers of a version already read share its copy: concurrent GETs
   * of a large snapshot by slow clients held one copy each (256 MiB apiece at the largest
   * capacity) and copied it each time.
   */
  read(): { version: number; data: Buffer } | null {
    const h = this.h;
    const last = this.lastRead;
    if (last !== null && this.binding.version(h) === last.version && !this.binding.lost(h)) return last;
    let r: [number, Buffer] | null;
    try {
      r = this.binding.snapshotRead(h);
    } catch (err) {
      const code = shmCode(err);
      if (code === SHM_ERRORS.ebusy)
        throw new ZiplineError(
          'ZL_SHM_BUSY',
          'no consistent snapshot within ~2 ms: a writer is rewriting it',
        );
      if (code === SHM_ERRORS.ecorrupt && this.isLost()) throw this.lostError();
      if (code === SHM_ERRORS.ecorrupt) {
        metrics.shmCorrupt.labels(this.settings.name, 'snapshot').inc();
        throw new ZiplineError(
          'ZL_SHM_CORRUPT',
          'the published snapshot is malformed (a peer wrote the segment outside the protocol); the next write replaces it',
        );
      }
      throw err;
    }
    this.lastRead = r === null ? null : { version: r[0], data: r[1] };
    return this.lastRead;
  }

  /** Replaces the snapshot; `ifMatch` makes it a compare-and-set. Returns the new version. */
  write(data: Buffer, ifMatch: number | null): number {
    try {
      return this.binding.snapshotWrite(this.h, data, ifMatch ?? -1);
    } catch (err) {
      const code = shmCode(err);
      if (code === SHM_ERRORS.etoobig)
        throw new ZiplineError(
          'ZL_SHM_TOO_LARGE',
          `larger than the snapshot capacity (${this.settings.snapshotCapacity} bytes)`,
        );
      if (code === SHM_ERRORS.econflict)
        throw new ZiplineError('ZL_SHM_PRECONDITION', 'the snapshot changed since the version in If-Match');
      if (code === SHM_ERRORS.ebusy)
        throw new ZiplineError('ZL_SHM_BUSY', 'the snapshot lock is held by a live writer');
      if (code === SHM_ERRORS.ecorrupt && this.isLost()) throw this.lostError();
      throw err;
    }
  }

  /** A message to C (the Node → C ring). */
  send(data: Buffer): void {
    const r = this.binding.send(this.h, data);
    if (r === SHM_ERRORS.ok) {
      this.tx.inc();
      return;
    }
    if (r === SHM_ERRORS.etoobig)
      throw new ZiplineError(
        'ZL_SHM_TOO_LARGE',
        `larger than a ring slot (${this.settings.slotSize - 16} bytes)`,
      );
    if (r === SHM_ERRORS.ecorrupt && this.isLost()) throw this.lostError();
    throw new ZiplineError(
      'ZL_SHM_BUSY',
      'the ring to C is full (its reader is behind); the message was dropped',
    );
  }

  onSnapshot(l: Listener): () => void {
    this.snapshotListeners.add(l);
    return () => this.snapshotListeners.delete(l);
  }

  /** Whole batches, for consumers that count or copy in bulk (no object per message). */
  onBatch(l: (b: ShmBatch) => void): () => void {
    this.batchListeners.add(l);
    return () => this.batchListeners.delete(l);
  }

  onMessage(l: (m: ShmMessage) => void): () => void {
    this.messageListeners.add(l);
    return () => this.messageListeners.delete(l);
  }

  /** SSE subscribers and long-polls waiting on this bridge. */
  get subscribers(): number {
    return this.snapshotListeners.size + this.messageListeners.size + this.batchListeners.size;
  }

  get version(): number {
    return this.lastVersion;
  }

  /** The sequence of the next C → Node message to be taken (what was taken is below it). */
  nextSeq(): number {
    return this.binding.stats(this.h)[9] ?? 0;
  }

  /** A new snapshot may be there (and, when polling, messages too). */
  private onWake(): void {
    if (this.handle === null) return;
    const v = this.binding.version(this.handle);
    if (v !== this.lastVersion) {
      this.lastVersion = v;
      for (const l of [...this.snapshotListeners]) l();
    }
    this.drain();
  }

  /** The kept C → Node messages, oldest first (at least the last `slots`). */
  recentMessages(): ShmMessage[] {
    const out: ShmMessage[] = [];
    for (const batch of this.recent) for (const m of messagesOf(batch)) out.push(m);
    return out;
  }

  /** Takes every waiting C → Node message off the ring, in batches (one native call each). */
  private drain(): void {
    if (this.handle === null) return;
    for (;;) {
      const r = this.binding.recvBatch(this.h, BATCH_BYTES);
      if (r === null) {
        this.countCorrupt();
        return;
      }
      const batch: ShmBatch = { first: r[0], count: r[1], buf: r[2] };
      this.rx.inc(batch.count);
      this.recent.push(batch);
      this.recentCount += batch.count;
      // keep whole batches while the rest still holds `slots` messages
      while (
        this.recent.length > 1 &&
        this.recentCount - (this.recent[0] as ShmBatch).count >= this.settings.slots
      ) {
        this.recentCount -= (this.recent.shift() as ShmBatch).count;
      }
      for (const l of this.batchListeners) l(batch);
      if (this.messageListeners.size > 0) {
        const listeners = [...this.messageListeners];
        for (const m of messagesOf(batch)) for (const l of listeners) l(m);
      }
    }
  }

  /** True once the segment was found truncated under us (SIGBUS): nothing touches it any more. */
  isLost(): boolean {
    if (this.handle === null || !this.binding.lost(this.handle)) return false;
    this.reportLost();
    return true;
  }

  /** Throws `ZL_SHM_CORRUPT` when the segment is lost (before a stream is opened on it). */
  assertUsable(): void {
    if (this.isLost()) throw this.lostError();
  }

  /** Called once if the segment is lost (SSE streams end then: nothing more will come). */
  onLost(l: () => void): () => void {
    this.lostListeners.add(l);
    return () => this.lostListeners.delete(l);
  }

  private lostError(): ZiplineError {
    return new ZiplineError(
      'ZL_SHM_CORRUPT',
      `the segment ${this.settings.segment} was truncated under zipline (a peer's ftruncate, or an open with O_TRUNC): this bridge is out of service until the segment is replaced (zipline shm rm ${this.settings.segment}: zipline then creates it again, or attaches to the one a peer creates)`,
    );
  }

  /** Logs (once) and counts a lost segment; stops polling it. */
  private reportLost(): void {
    if (this.lostReported) return;
    this.lostReported = true;
    if (this.pollTimer !== null) clearImmediate(this.pollTimer);
    this.pollTimer = null;
    metrics.shmCorrupt.labels(this.settings.name, 'segment').inc();
    this.log?.error(
      { shm: this.settings.name, segment: this.settings.segment, code: 'ZL_SHM_CORRUPT' },
      'shared-memory segment truncated under zipline (SIGBUS caught): the bridge answers 502 until the segment is replaced (remove it: zipline creates it again or attaches to the one a peer creates); the rest of zipline runs on',
    );
    for (const l of [...this.lostListeners]) l();
    this.lostListeners.clear();
  }

  /** Counts and reports (at most once a minute) C → Node slots the addon skipped as malformed. */
  private countCorrupt(): void {
    if (this.handle === null) return;
    const total = this.binding.corrupt(this.handle);
    if (total === this.corruptSeen) return;
    metrics.shmCorrupt.labels(this.settings.name, 'c_to_node').inc(total - this.corruptSeen);
    this.corruptSeen = total;
    const now = Date.now();
    if (now - this.corruptLoggedAt < 60_000) return;
    this.corruptLoggedAt = now;
    this.log?.warn(
      { shm: this.settings.name, code: 'ZL_SHM_CORRUPT', skipped: total },
      'C → Node ring slots skipped: a producer wrote outside the protocol (seq not its position, a length over the slot, or head more than a ring ahead)',
    );
  }

  stats(): Record<string, unknown> {
    if (this.handle === null)
      return {
        name: this.settings.name,
        segment: this.settings.segment,
        http: this.settings.http,
        detached: this.detached?.message ?? 'closed',
      };
    if (this.isLost())
      return {
        name: this.settings.name,
        segment: this.settings.segment,
        http: this.settings.http,
        lost: true,
      };
    const n = this.binding.stats(this.h);
    const at = (i: number): number => n[i] ?? 0;
    const now = Date.now();
    return {
      name: this.settings.name,
      segment: this.settings.segment,
      http: this.settings.http,
      layout: { snapshot_capacity: at(0), ring_slots: at(1), ring_slot_size: at(2), total_size: at(3) },
      snapshot: { version: at(4), lock_owner: at(5) || null, steals: at(6), writes: at(7) },
      c_to_node: {
        head: at(8),
        tail: at(9),
        lag: at(8) - at(9),
        dropped: at(10),
        corrupt: at(19),
        producer_pid: at(14) || null,
      },
      node_to_c: {
        head: at(11),
        tail: at(12),
        lag: at(11) - at(12),
        dropped: at(13),
        consumer_pid: at(15) || null,
      },
      heartbeat_age_ms: {
        c_producer: at(16) ? now - at(16) : null,
        c_consumer: at(17) ? now - at(17) : null,
      },
      creator_pid: at(18),
      recent_messages: this.recentCount,
      subscribers: this.subscribers,
      uploads: { held_bytes: this.uploads.inUse, limit_bytes: this.uploads.limit },
    };
  }

  close(): void {
    this.watch?.stop();
    if (this.pollTimer !== null) clearImmediate(this.pollTimer);
    this.pollTimer = null;
    if (this.handle === null) return;
    this.binding.close(this.handle);
    this.handle = null;
    if (this.settings.removeOnExit) this.binding.unlink(this.settings.segment);
    this.snapshotListeners.clear();
    this.messageListeners.clear();
    this.batchListeners.clear();
  }
}
