/**
 * Writes held until the end of this event-loop turn, then sent together from one check-phase
 * callback (`setImmediate`, after libuv has run every ready I/O callback), so the write(2)s of a
 * whole batch of requests go out back to back.
 *
 * Why: on a machine where the peers (clients, origins) run on other cores, a write that wakes an
 * idle peer costs an inter-processor interrupt, and a proxy that writes as it goes pays one per
 * write. Writes grouped at the end of the turn find the peer already awake for all but the
 * first. Measured (2-byte keep-alive responses, 50 connections, proxy on its own core): 23.4 →
 * 18.3 µs of proxy CPU per request, 42.5 k → 54 k requests/s; with one connection the batch is one
 * request and nothing waits. HAProxy likewise sends at the end of its event-loop pass.
 *
 * Two ways to hold:
 * - **Direct** (`writeText` with `direct`, Linux with the native addon, plain TCP sockets whose
 *   Node write queue is empty): the text (heads, small bodies; at most `DIRECT_MAX`) is kept
 *   here and sent with one send(2) from JavaScript (native/pump/send.c), skipping Node's
 *   Writable, its WriteWrap and stream bookkeeping: ~0.3 µs per write, 15.6 → 15.0 µs per
 *   keep-alive request. What the kernel does not take (a partial send, EAGAIN, an error) goes to
 *   `socket.write`, which queues it (backpressure and 'drain' as usual) or reports the error as
 *   it always did.
 * - **Corked** (everything else: TLS, Buffers, longer text, a socket with a write queue): the
 *   socket is corked on its first write of the turn and uncorked at the end of it.
 * Held text always goes before anything written later: a corked write first moves it into the
 * cork. Code that does anything else with a socket it writes through here (end it, hand it to
 * the splice pump or an upgrade pump, check `writableLength`) calls `releaseWrites` first.
 */
import type { Socket } from 'node:net';
import { onTurnEnd, scheduleTurnEnd } from '../core/turn-end.js';
import { nativePump } from '../l4/native-pump.js';
import { resetSocket } from '../l4/reset-socket.js';

/** Corked this turn (a property, not a Set: no hashing or rehashing per turn). */
const HELD = Symbol('zipline.heldWrites');
/** Text held for a direct send at the end of this turn. */
const TEXT = Symbol('zipline.heldText');
/** The socket's fd for direct sends, -1 when it takes none (looked up once). */
const FD = Symbol('zipline.directFd');
/** Bytes sent directly: `socket.bytesWritten` does not see them. */
const SENT = Symbol('zipline.directSent');
type Holdable = Socket & {
  [HELD]?: boolean;
  [TEXT]?: string | undefined;
  [FD]?: number | undefined;
  [SENT]?: number;
};

/** The most text held for one direct send (native/pump/send.c `SEND_MAX`). */
export const DIRECT_MAX = 16 * 1024;

const send = nativePump.sender;
const held: Holdable[] = [];

/** True where direct sends exist (Linux with the native addon). */
export const directWritesAvailable = send !== null;

/**
 * Writes latin1 `text` to `socket` at the end of this turn; `direct`: by a direct send when the
 * socket allows it. Returns as `socket.write` does (false: wait for 'drain').
 */
export function writeText(socket: Socket, text: string, direct: boolean): boolean {
  const s = socket as Holdable;
  const kept = s[TEXT];
  if (kept !== undefined) {
    if (kept.length + text.length <= DIRECT_MAX) {
      s[TEXT] = kept + text;
      return true;
    }
  } else if (direct && s[HELD] !== true && text.length <= DIRECT_MAX && directFd(s) >= 0) {
    if (s.writableLength === 0 && !s.connecting) {
      s[TEXT] = text;
      enqueue(s);
      return true;
    }
  }
  holdWrites(s);
  return s.write(text, 'latin1');
}

/**
 * Gives `socket` this module's properties before its first write, always in the same order, so
 * that sockets of one kind share one hidden class: added as they came (held, text or fd first,
 * whichever write came first), they made the loads in `writeText` megamorphic.
 */
export function prepareWrites(socket: Socket): void {
  const s = socket as Holdable;
  s[HELD] = false;
  s[TEXT] = undefined;
  s[FD] = undefined;
  s[SENT] = 0;
}

/** Bytes written to `socket`: what Node wrote and what direct sends did. */
export function bytesWritten(socket: Socket): number {
  return socket.bytesWritten + ((socket as Holdable)[SENT] ?? 0);
}

/** Writes `bytes` to `socket` at the end of this turn (corked), after what is held. */
export function writeBytes(socket: Socket, bytes: Buffer): boolean {
  holdWrites(socket);
  return socket.write(bytes);
}

/** Corks `socket` until the end of this turn (once per turn; cheap to call per write). */
export function holdWrites(socket: Socket): void {
  const s = socket as Holdable;
  if (s[HELD] === true) return;
  s[HELD] = true;
  s.cork();
  const text = s[TEXT];
  if (text !== undefined) {
    // held text goes first, inside the cork; the socket is in the list already
    s[TEXT] = undefined;
    s.write(text, 'latin1');
    return;
  }
  enqueue(s);
}

/** Sends what `socket` holds now (its writes are no longer held this turn). */
export function releaseWrites(socket: Socket): void {
  const s = socket as Holdable;
  if (s[TEXT] !== undefined) sendText(s);
  if (s[HELD] !== true) return;
  s[HELD] = false;
  s.uncork();
}

/**
 * Closes `socket` abortively once what it holds this turn (a response head, body bytes) is sent,
 * so a client whose response breaks sees what a proxy writing as it goes would have sent.
 * `reset`: with an RST, which also drops what the kernel still holds for the client.
 */
export function abortWrites(socket: Socket, reset: boolean): void {
  releaseWrites(socket);
  if (reset) resetSocket(socket);
  socket.destroy();
}

function enqueue(s: Holdable): void {
  held.push(s);
  scheduleTurnEnd();
}

onTurnEnd(flushHeld);

function flushHeld(): void {
  for (let i = 0; i < held.length; i++) {
    const s = held[i] as Holdable;
    // released early (and maybe held again, later in the list): send only what is still held
    if (s[TEXT] !== undefined) sendText(s);
    else if (s[HELD] === true) {
      s[HELD] = false;
      s.uncork();
    }
  }
  held.length = 0;
}

function sendText(s: Holdable): void {
  const text = s[TEXT] as string;
  s[TEXT] = undefined;
  // destroyed meanwhile: nothing more goes out (as for corked writes)
  if (s.destroyed || send === null) return;
  const n = send(s[FD] as number, text);
  if (n > 0) s[SENT] = (s[SENT] ?? 0) + n;
  if (n === text.length) return;
  // the rest, or all of it after EAGAIN or an error: Node queues it, or reports the error
  s.write(n > 0 ? text.slice(n) : text, 'latin1');
}

/** The fd a direct send may use: a plain TCP socket's (not TLS), looked up once. */
function directFd(s: Holdable): number {
  let fd = s[FD];
  if (fd === undefined) {
    const handle = (s as unknown as { _handle?: { fd?: unknown } | null })._handle;
    const encrypted = (s as unknown as { encrypted?: boolean }).encrypted === true;
    fd = send !== null && !encrypted && typeof handle?.fd === 'number' ? handle.fd : -1;
    s[FD] = fd;
  }
  return fd;
}
