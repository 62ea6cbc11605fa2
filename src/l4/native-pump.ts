/**
 * The optional native splice pump (native/pump/pump.c), loaded when it was built (Linux, at
 * `npm install`). When present, established TCP connections are handed to it: bytes move
 * socket → pipe → socket in the kernel on one native thread, never through JavaScript. When
 * absent (other platforms, a failed build, `native: off`), the JavaScript pump is used; both
 * behave the same (half-close, reset propagation, idle timeout, byte counts), and the TCP test
 * suite runs against both.
 */
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

/** How a native pump run ended; mirrors the enum in pump.c. */
export const PUMP_REASON = { done: 0, errorA: 1, errorB: 2, idle: 3, cancel: 4, setup: 5 } as const;
export type PumpReason = (typeof PUMP_REASON)[keyof typeof PUMP_REASON];

export interface PumpClient {
  /** Called once, on the event loop, when the pump has let go of both sockets. */
  onPumpDone(reason: PumpReason, errno: number, bytesAtoB: number, bytesBtoA: number): void;
}

interface Binding {
  start(cb: (id: number, reason: number, errno: number, ab: number, ba: number) => void): void;
  add(id: number, fdA: number, fdB: number, idleMs: number): void;
  cancel(id: number): void;
}

function load(): Binding | null {
  if (process.platform !== 'linux' || process.env.ZIPLINE_NO_NATIVE === '1') return null;
  try {
    const require = createRequire(import.meta.url);
    const path = fileURLToPath(new URL('../../../build/Release/zipline_pump.node', import.meta.url));
    return require(path) as Binding;
  } catch {
    return null;
  }
}

class NativePump {
  private readonly binding: Binding | null;
  private readonly clients = new Map<number, PumpClient>();
  private nextId = 1;
  private started = false;

  constructor() {
    this.binding = load();
  }

  get available(): boolean {
    return this.binding !== null;
  }

  /** Hands two connected, non-reading sockets to the pump. False when it cannot take them. */
  add(client: PumpClient, a: Socket, b: Socket, idleMs: number): number | null {
    const binding = this.binding;
    const fa = fdOf(a);
    const fb = fdOf(b);
    if (binding === null || fa < 0 || fb < 0) return null;
    if (!this.started) {
      binding.start((id, reason, errno, ab, ba) => this.done(id, reason as PumpReason, errno, ab, ba));
      this.started = true;
    }
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffff_fffe ? 1 : this.nextId + 1;
    this.clients.set(id, client);
    binding.add(id, fa, fb, idleMs);
    return id;
  }

  cancel(id: number): void {
    this.binding?.cancel(id);
  }

  private done(id: number, reason: PumpReason, errno: number, ab: number, ba: number): void {
    const client = this.clients.get(id);
    if (client === undefined) return;
    this.clients.delete(id);
    client.onPumpDone(reason, errno, ab, ba);
  }
}

/** The socket's file descriptor (libuv TCP handle; -1 when it has none, e.g. on Windows). */
function fdOf(s: Socket): number {
  const handle = (s as unknown as { _handle?: { fd?: number } | null })._handle;
  return typeof handle?.fd === 'number' ? handle.fd : -1;
}

export const nativePump = new NativePump();
