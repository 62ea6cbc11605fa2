/**
 * The optional native data path (native/pump/), loaded when it was built (Linux, at
 * `npm install`). One native thread serves it: established TCP connections are handed to its
 * splice pump (bytes move socket → pipe → socket in the kernel, never through JavaScript), and
 * UDP listeners can hand it their data plane (see udp-native-listener.ts). When absent (other
 * platforms, a failed build, `native: off`), the JavaScript data path is used; both behave the
 * same, and the TCP and UDP test suites run against both.
 */
import { closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { BoundSocket } from '../core/handover.js';

/** How a native pump run ended; mirrors the enum in pump.c. */
/** `clientIdle`: body jobs only (native/pump/body.c): the client took nothing for its idle timeout. */
export const PUMP_REASON = {
  done: 0,
  errorA: 1,
  errorB: 2,
  idle: 3,
  cancel: 4,
  setup: 5,
  clientIdle: 6,
} as const;
export type PumpReason = (typeof PUMP_REASON)[keyof typeof PUMP_REASON];

/** With `idle` (TCP), the second word names the sides that left bytes unread: A the client, B the upstream. */
export const IDLE_UNREAD = { a: 1, b: 2 } as const;

/** What a native HTTP body job reports to (native/pump/body.c). */
export interface BodyClient {
  /** Once, on the event loop; the job has closed its own copies of both sockets. */
  onBodyDone(reason: PumpReason, errno: number, bytes: number): void;
}

/** A connection the native thread accepted: its fd and its peer's address ("" and 0 if not IP). */
export type AcceptedFd = (fd: number, ip: string, port: number) => void;

export interface PumpClient {
  /** Called once, on the event loop, when the pump has let go of both sockets. */
  onPumpDone(reason: PumpReason, errno: number, bytesAtoB: number, bytesBtoA: number): void;
}

/** Events and commands; mirror native/pump/pump.h (pinned by test/unit/native-constants.test.ts). */
export const EV = {
  tcpDone: 0,
  udpNew: 1,
  udpEnd: 2,
  accepted: 3,
  bodyDone: 4,
  acceptClosed: 5,
  acceptPaused: 6,
} as const;
export const CMD = {
  tcpAdd: 1,
  tcpCancel: 2,
  udpListen: 3,
  udpAccept: 4,
  udpRefuse: 5,
  udpEnd: 6,
  udpStopAccepting: 7,
  udpUpdate: 8,
  udpClose: 9,
  acceptAdd: 10,
  acceptRemove: 11,
  bodyAdd: 12,
  bodyCancel: 13,
} as const;

/** How a native UDP session ended; mirrors udp.c. */
export const UDP_END = { responses: 0, idle: 1, error: 2, cancel: 3, setup: 4 } as const;
export type UdpEndReason = (typeof UDP_END)[keyof typeof UDP_END];

export interface UdpCounters {
  datagramsIn: number;
  datagramsOut: number;
  bytesIn: number;
  bytesOut: number;
  dropLimit: number;
  dropDraining: number;
  dropQueue: number;
  dropSend: number;
  sessions: number;
}

export interface UdpSettingsNative {
  responses: number;
  idleTimeoutMs: number;
  maxQueue: number;
  maxSessions: number;
}

/** What a native UDP listener answers to. */
export interface NativeUdpOwner {
  onNewClient(sessionId: number, ip: string, port: number): void;
  onSessionEnd(
    sessionId: number,
    reason: UdpEndReason,
    errno: number,
    counts: { datagramsIn: number; datagramsOut: number; bytesIn: number; bytesOut: number; dropped: number },
  ): void;
}

type Callback = (
  type: number,
  id: number,
  lid: number,
  reason: number,
  errno: number,
  n0: number,
  n1: number,
  n2: number,
  n3: number,
  ip: string,
  port: number,
) => void;

export interface Binding {
  start(cb: Callback): void;
  command(
    kind: number,
    id: number,
    lid: number,
    fa: number,
    fb: number,
    u0: number,
    u1: number,
    u2: number,
    u3: number,
    ip: string,
    port: number,
  ): void;
  bindSocket(ip: string, port: number, tcp: boolean, reusePort: boolean, rcvbuf?: number): [number, number];
  udpCounters(lid: number): number[];
  /** One send(2) of a latin1 string (at most 16 KiB) on a socket: bytes sent, or -errno. */
  sendLatin1(fd: number, text: string): number;
  /** getsockopt SO_ERROR: the error the peer left pending (and cleared by asking), 0, or -errno. */
  socketError(fd: number): number;
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

export class NativePump {
  private binding: Binding | null;
  private readonly tcp = new Map<number, PumpClient>();
  private readonly udp = new Map<number, NativeUdpOwner>();
  /** Each native acceptor's owner: its new fds, and its pauses (out of descriptors or memory: the errno). */
  private readonly acceptors = new Map<
    number,
    { readonly onFd: AcceptedFd; readonly onPaused: (errno: number) => void }
  >();
  private readonly bodies = new Map<number, BodyClient>();
  private readonly acceptClosing = new Map<number, () => void>();
  private nextId = 1;
  private nextListenerId = 1;
  private started = false;

  /** `binding` for tests; by default the built addon, or null where there is none. */
  constructor(binding: Binding | null = load()) {
    this.binding = binding;
  }

  get available(): boolean {
    return this.binding !== null;
  }

  /** The direct send (native/pump/send.c), which needs no thread; null without the addon. */
  get sender(): ((fd: number, text: string) => number) | null {
    const b = this.binding;
    return b === null ? null : (fd, text) => b.sendLatin1(fd, text);
  }

  /**
   * The error a socket's peer left pending (native/pump/sockerr.c), 0 when there is none or
   * without the addon. Asking clears it.
   */
  socketError(s: Socket): number {
    const b = this.binding;
    const fd = b === null ? -1 : fdOf(s);
    return fd < 0 ? 0 : (b as Binding).socketError(fd);
  }

  /**
   * The binding with its thread started, or null: not built, or the thread could not start
   * (ZL_PUMP: epoll, eventfd or the thread itself). Then every caller falls back to the
   * JavaScript data path, for good: a failed start is not retried per connection.
   */
  private ready(): Binding | null {
    const b = this.binding;
    if (b === null || this.started) return b;
    try {
      this.start(b);
    } catch {
      this.binding = null;
      return null;
    }
    return b;
  }

  private start(b: Binding): void {
    b.start((type, id, lid, reason, errno, n0, n1, n2, n3, ip, port) => {
      if (type === EV.tcpDone) {
        const client = this.tcp.get(id);
        if (client === undefined) return;
        this.tcp.delete(id);
        client.onPumpDone(reason as PumpReason, errno, n0, n1);
      } else if (type === EV.udpNew) {
        this.udp.get(lid)?.onNewClient(id, ip, port);
      } else if (type === EV.bodyDone) {
        const client = this.bodies.get(id);
        if (client === undefined) return;
        this.bodies.delete(id);
        client.onBodyDone(reason as PumpReason, errno, n0);
      } else if (type === EV.acceptClosed) {
        this.acceptClosing.get(lid)?.();
        this.acceptClosing.delete(lid);
      } else if (type === EV.acceptPaused) {
        this.acceptors.get(lid)?.onPaused(errno);
      } else if (type === EV.accepted) {
        const onFd = this.acceptors.get(lid)?.onFd;
        if (onFd === undefined)
          closeSync(id); // the listener is gone (the backstop fired)
        else onFd(id, ip, port);
      } else if (type === EV.udpEnd) {
        this.udp.get(lid)?.onSessionEnd(id, reason as UdpEndReason, errno, {
          datagramsIn: n0,
          datagramsOut: n1,
          bytesIn: n2,
          bytesOut: n3,
          dropped: port,
        });
      }
    });
    this.started = true;
  }

  /** Hands two connected, non-reading sockets to the splice pump; null when it cannot take them. */
  add(client: PumpClient, a: Socket, b: Socket, idleMs: number): number | null {
    const fa = fdOf(a);
    const fb = fdOf(b);
    const binding = fa < 0 || fb < 0 ? null : this.ready();
    if (binding === null) return null;
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffff_fffe ? 1 : this.nextId + 1;
    this.tcp.set(id, client);
    try {
      binding.command(CMD.tcpAdd, id, 0, fa, fb, idleMs, 0, 0, 0, '', 0);
    } catch {
      // ZL_PUMP (out of memory): this connection takes the JavaScript path
      this.tcp.delete(id);
      return null;
    }
    return id;
  }

  /**
   * Drains `listening`'s accept queue on the native thread (see native/pump/accept.c); each new
   * connection's fd goes to `onFd` on the event loop with its peer's address from accept4(), and
   * `onPaused` hears of each accept that failed for want of descriptors or memory (the thread
   * then leaves the socket for 250 ms).
   * Returns an id for `acceptOff`, or null when the native path is not available.
   */
  acceptOn(
    listening: { _handle?: unknown },
    onFd: AcceptedFd,
    onPaused: (errno: number) => void,
  ): number | null {
    const handle = listening._handle as { fd?: number } | null | undefined;
    const fd = typeof handle?.fd === 'number' ? handle.fd : -1;
    const b = fd < 0 ? null : this.ready();
    if (b === null) return null;
    const lid = this.nextListenerId++;
    this.acceptors.set(lid, { onFd, onPaused });
    try {
      b.command(CMD.acceptAdd, 0, lid, fd, -1, 0, 0, 0, 0, '', 0);
    } catch {
      // ZL_PUMP (the listening socket not duplicated, out of memory): libuv accepts alone
      this.acceptors.delete(lid);
      return null;
    }
    return lid;
  }

  /**
   * Stops the native acceptor; resolves once the thread has closed its copy of the listening
   * socket (only then does closing the server stop the port from listening). Connections it
   * accepted before that are still handed to the listener (they come before the thread's
   * answer): a client the kernel let in is served, not reset.
   */
  acceptOff(lid: number): Promise<void> {
    const b = this.binding;
    if (b === null) {
      this.acceptors.delete(lid);
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.acceptors.delete(lid);
        resolve();
      };
      const timer = setTimeout(done, 1000); // a backstop; the thread answers in microseconds
      this.acceptClosing.set(lid, done);
      b.command(CMD.acceptRemove, 0, lid, -1, -1, 0, 0, 0, 0, '', 0);
    });
  }

  /**
   * Splices exactly `bytes` from `from` to `to` on the native thread (an HTTP body). The caller
   * has stopped libuv reading `from` and has nothing queued on `to`. `idleMs` bounds a stall of
   * `from`, `clientIdleMs` one of `to` (0: `idleMs`). Null when not available.
   */
  body(
    client: BodyClient,
    from: Socket,
    to: Socket,
    bytes: number,
    idleMs: number,
    clientIdleMs: number,
  ): number | null {
    const fa = fdOf(from);
    const fb = fdOf(to);
    const b = fa < 0 || fb < 0 ? null : this.ready();
    if (b === null) return null;
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffff_fffe ? 1 : this.nextId + 1;
    this.bodies.set(id, client);
    const lo = bytes % 0x1_0000_0000;
    const hi = Math.floor(bytes / 0x1_0000_0000);
    try {
      b.command(CMD.bodyAdd, id, 0, fa, fb, lo, hi, idleMs, clientIdleMs, '', 0);
    } catch {
      this.bodies.delete(id);
      return null;
    }
    return id;
  }

  /**
   * Ends a body job. Its `onBodyDone` still comes, once, with what was delivered: reason `cancel`,
   * or the job's own end if it ended before the thread saw the cancel.
   */
  bodyCancel(id: number): void {
    if (!this.bodies.has(id)) return;
    this.binding?.command(CMD.bodyCancel, id, 0, -1, -1, 0, 0, 0, 0, '', 0);
  }

  cancel(id: number): void {
    this.binding?.command(CMD.tcpCancel, id, 0, -1, -1, 0, 0, 0, 0, '', 0);
  }

  /**
   * A bound (not yet listening) socket: `[fd, port]`. With `reusePort`, SO_REUSEPORT (each worker
   * binds its own; the kernel spreads connections). `rcvbuf` > 0 sets SO_RCVBUF. Throws with an
   * errno-like code.
   */
  bindSocket(ip: string, port: number, tcp: boolean, reusePort: boolean, rcvbuf = 0): [number, number] {
    const b = this.binding;
    if (b === null) throw new Error('native data path not available');
    return b.bindSocket(ip, port, tcp, reusePort, rcvbuf);
  }

  /** Binds a UDP socket the native thread will serve. Throws (with an errno-like code) when it cannot. */
  udpListen(
    owner: NativeUdpOwner,
    ip: string,
    port: number,
    s: UdpSettingsNative,
    reusePort = false,
    receiveBuffer = 0,
    handed?: BoundSocket,
  ): { lid: number; port: number; fd: number } {
    const b = this.ready();
    if (b === null) throw new Error('native data path not available (ZL_PUMP: its thread could not start)');
    // `handed`: an upgrade's socket, bound by the old process (core/handover.ts)
    const [fd, bound] = handed
      ? [handed.fd, handed.port]
      : b.bindSocket(ip, port, false, reusePort, receiveBuffer);
    const lid = this.nextListenerId++;
    this.udp.set(lid, owner);
    try {
      udpSettingsCommand(b, CMD.udpListen, lid, fd, s);
    } catch (err) {
      this.udp.delete(lid);
      closeSync(fd);
      throw err;
    }
    return { lid, port: bound, fd };
  }

  udpAccept(sessionId: number, ip: string, port: number): void {
    this.binding?.command(CMD.udpAccept, sessionId, 0, -1, -1, 0, 0, 0, 0, ip, port);
  }

  udpRefuse(sessionId: number): void {
    this.binding?.command(CMD.udpRefuse, sessionId, 0, -1, -1, 0, 0, 0, 0, '', 0);
  }

  udpEnd(sessionId: number): void {
    this.binding?.command(CMD.udpEnd, sessionId, 0, -1, -1, 0, 0, 0, 0, '', 0);
  }

  /** `stopReading`: an upgrade's new process reads the socket now; the sessions still answer through it. */
  udpStopAccepting(lid: number, stopReading = false): void {
    this.binding?.command(CMD.udpStopAccepting, 0, lid, -1, -1, stopReading ? 1 : 0, 0, 0, 0, '', 0);
  }

  udpUpdate(lid: number, s: UdpSettingsNative): void {
    if (this.binding !== null) udpSettingsCommand(this.binding, CMD.udpUpdate, lid, -1, s);
  }

  /** Closes the listening socket (ending any session left); the owner hears nothing more. */
  udpClose(lid: number): void {
    this.binding?.command(CMD.udpClose, 0, lid, -1, -1, 0, 0, 0, 0, '', 0);
    this.udp.delete(lid);
  }

  udpCounters(lid: number): UdpCounters {
    const c = this.binding?.udpCounters(lid) ?? [];
    const n = (i: number): number => c[i] ?? 0;
    return {
      datagramsIn: n(0),
      datagramsOut: n(1),
      bytesIn: n(2),
      bytesOut: n(3),
      dropLimit: n(4),
      dropDraining: n(5),
      dropQueue: n(6),
      dropSend: n(7),
      sessions: n(8),
    };
  }
}

/** A UDP listener's command that carries its settings (listen, update). */
function udpSettingsCommand(b: Binding, kind: number, lid: number, fd: number, s: UdpSettingsNative): void {
  b.command(kind, 0, lid, fd, -1, s.responses, s.idleTimeoutMs, s.maxQueue, s.maxSessions, '', 0);
}

/** The socket's file descriptor (libuv TCP handle; -1 when it has none, e.g. on Windows). */
function fdOf(s: Socket): number {
  const handle = (s as unknown as { _handle?: { fd?: number } | null })._handle;
  return typeof handle?.fd === 'number' ? handle.fd : -1;
}

export const nativePump = new NativePump();
