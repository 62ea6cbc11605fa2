/**
 * The native tunnel engine (native/tunnel/), loaded when it was built (Linux, at `npm install`,
 * with Node's OpenSSL headers) and not turned off (`ZIPLINE_NO_NATIVE=1`, or `native: off` on the
 * relay or agent). One thread runs every native session of the process; this module starts it,
 * sends it commands and routes its events to the sessions (native-session.ts).
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** Commands; mirror native/tunnel/tunnel.h (pinned by test/unit/native-constants.test.ts). */
export const C = {
  start: 1,
  control: 2,
  setPeer: 3,
  ping: 4,
  goaway: 5,
  fatal: 6,
  close: 7,
  destroy: 8,
  release: 9,
  open: 10,
  answer: 11,
  stWrite: 12,
  stEnd: 13,
  stConsumed: 14,
  stJs: 15,
  stAttach: 16,
  stReset: 17,
  stRelease: 18,
  datagram: 19,
} as const;

/** Events; mirror native/tunnel/tunnel.h. */
export const EV = {
  tlsDone: 1,
  frame: 2,
  open: 3,
  openAck: 4,
  refused: 5,
  goaway: 6,
  rtt: 7,
  fatal: 8,
  closed: 9,
  stData: 10,
  stReset: 11,
  stTaken: 12,
  stDone: 13,
} as const;

/** How an attached stream ended (EV.stDone); mirrors tunnel.h. */
export const DONE = { done: 0, socketError: 1, reset: 2, idle: 3, cancel: 4, session: 5 } as const;
export type DoneReason = (typeof DONE)[keyof typeof DONE];

/** Frame types by the engine's counter slot (session.c frame_index). */
export const SLOT_TYPES = [
  0, 0x01, 0x02, 0x03, 0x04, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x20, 0x21,
] as const;

export type EngineEvent = (
  type: number,
  sid: number,
  stream: number,
  a: number,
  b: number,
  x: number,
  y: number,
  data: Buffer | null,
  text: string | null,
) => void;

interface Binding {
  start(cb: EngineEvent): void;
  tlsContext(
    server: boolean,
    cert: string | null,
    key: string | null,
    ca: string | null,
    ciphers: string,
  ): number;
  tlsContextDrop(id: number): void;
  session(
    fd: number,
    agent: boolean,
    ctx: number,
    serverName: string | null,
    verifyName: boolean,
    opts: number[],
    initial: Buffer | null,
  ): number;
  command(
    kind: number,
    sid: number,
    stream: number,
    a: number,
    b: number,
    c: number,
    d: number,
    data?: Buffer | null,
    fd?: number,
  ): void;
  stats(sid: number, out: Float64Array): boolean;
  zstd(): boolean;
  /** Nanoseconds the engine's thread has spent working (not waiting for events). */
  busyNs(): number;
  /** The engine's frame decoder over bytes split in two reads at `cut`: [frames, GOAWAY code]. */
  checkFrames(bytes: Buffer, maxPayload: number, cut: number): [number, number];
}

/** What a session does with the engine's events for it. */
export interface EngineClient {
  onEngineEvent: EngineEvent;
}

function load(): Binding | null {
  if (process.platform !== 'linux' || process.env.ZIPLINE_NO_NATIVE === '1') return null;
  try {
    const path = fileURLToPath(new URL('../../../../build/Release/zipline_tunnel.node', import.meta.url));
    return createRequire(import.meta.url)(path) as Binding;
  } catch {
    return null;
  }
}

class Engine {
  readonly binding: Binding | null;
  private readonly clients = new Map<number, EngineClient>();
  private started = false;

  constructor() {
    this.binding = load();
  }

  get available(): boolean {
    return this.binding !== null;
  }

  /** zstd linked into the engine (else native sessions negotiate no codec). */
  get zstd(): boolean {
    return this.binding?.zstd() ?? false;
  }

  /** The binding, with the thread running. Throws when the engine is not available. */
  get b(): Binding {
    const b = this.binding;
    if (b === null) throw new Error('the native tunnel engine is not available');
    if (!this.started) {
      b.start((type, sid, stream, a, bb, x, y, data, text) =>
        this.clients.get(sid)?.onEngineEvent(type, sid, stream, a, bb, x, y, data, text),
      );
      this.started = true;
    }
    return b;
  }

  /**
   * Starts the thread now (a relay or agent that will use it calls this at start): its epoll and
   * event descriptors live as long as the process, like libuv's own, and are there before any
   * connection is counted.
   */
  warm(): void {
    if (this.binding !== null) void this.b;
  }

  register(sid: number, client: EngineClient): void {
    this.clients.set(sid, client);
  }

  forget(sid: number): void {
    this.clients.delete(sid);
  }

  /** Nanoseconds the thread has worked (0 when it is not available). */
  busyNs(): number {
    return this.binding?.busyNs() ?? 0;
  }

  /** Sessions the engine is running (for leak checks). */
  get sessions(): number {
    return this.clients.size;
  }
}

export const engine = new Engine();
