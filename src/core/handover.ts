/**
 * Listening sockets handed from a zipline process to the one that replaces it at an upgrade
 * (SIGUSR2, `POST /upgrade`: docs/OPERATIONS.md "Upgrade"), as nginx's binary upgrade and
 * HAProxy's `expose-fd listeners` do: the same sockets, so no connection is refused and none
 * waiting in an accept queue is lost between the two processes.
 *
 * The old side: every place that binds registers its socket here (`offer`) while it listens.
 * The new side: the old process passes each socket as an inherited descriptor and names it in
 * `ZIPLINE_HANDOVER` (JSON: the readiness descriptor, then the sockets in descriptor order from
 * `FIRST_SOCKET_FD`); each place that binds asks `inherited` first and listens on the descriptor
 * it is given instead of binding. A socket is matched by its kind, listener name and `listen`
 * string, or, for an address with a fixed port, by kind and `listen` alone (a renamed listener).
 * Descriptors nothing claimed are closed once the process started.
 */
import { closeSync, writeSync } from 'node:fs';
import { procBinding } from './proc-binding.js';
import { activatedSocket } from './socket-activation.js';

export const HANDOVER_ENV = 'ZIPLINE_HANDOVER';
/** The descriptor the new process writes `ready` to once it serves (then closes it). */
export const READY_FD = 3;
/** The first handed-over socket's descriptor in the new process. */
export const FIRST_SOCKET_FD = 4;

export type SocketKind = 'tcp' | 'udp';

export interface HandedSocket {
  readonly kind: SocketKind;
  readonly name: string;
  readonly listen: string;
  /** The port it is bound to (what `listen` names, or the one port 0 was given). */
  readonly port: number;
}

export interface BoundSocket {
  readonly fd: number;
  readonly port: number;
}

/** A socket's descriptor and bound port now; null when it has none (closed). */
export type Bound = BoundSocket | null;

interface Offer {
  readonly kind: SocketKind;
  readonly name: string;
  readonly listen: string;
  bound(): Bound;
}

/** What this process listens on, to hand over at an upgrade. */
const offers = new Map<object, Offer>();

/** `owner` listens on a socket a successor may take over; `withdraw(owner)` when it closes. */
export function offer(
  owner: object,
  kind: SocketKind,
  name: string,
  listen: string,
  bound: () => Bound,
): void {
  offers.set(owner, { kind, name, listen, bound });
}

export function withdraw(owner: object): void {
  offers.delete(owner);
}

/** The sockets to hand over now, with their descriptors in this process. */
export function currentOffers(): Array<HandedSocket & { fd: number }> {
  const out: Array<HandedSocket & { fd: number }> = [];
  for (const o of offers.values()) {
    const b = o.bound();
    if (b !== null && b.fd > 2)
      out.push({ kind: o.kind, name: o.name, listen: o.listen, fd: b.fd, port: b.port });
  }
  return out;
}

/** The env entry that tells the new process what its descriptors are. */
export function handoverEnv(sockets: readonly HandedSocket[]): string {
  return JSON.stringify({
    ready: READY_FD,
    sockets: sockets.map((s) => ({ kind: s.kind, name: s.name, listen: s.listen, port: s.port })),
  });
}

// ---- the new process ---------------------------------------------------------------------------

interface Inherited extends HandedSocket {
  fd: number;
  claimed: boolean;
}

/** Read once, at load; removed from the environment so children (workers, checks) never see it. */
const received = parse(process.env[HANDOVER_ENV]);
delete process.env[HANDOVER_ENV];

function parse(text: string | undefined): { ready: number; sockets: Inherited[] } | null {
  if (text === undefined || text === '') return null;
  try {
    const v = JSON.parse(text) as { ready?: unknown; sockets?: unknown };
    if (v.ready !== READY_FD || !Array.isArray(v.sockets)) return null;
    const sockets: Inherited[] = [];
    v.sockets.forEach(
      (s: { kind?: unknown; name?: unknown; listen?: unknown; port?: unknown }, i: number) => {
        const { kind, name, listen, port } = s;
        if (
          (kind === 'tcp' || kind === 'udp') &&
          typeof name === 'string' &&
          typeof listen === 'string' &&
          typeof port === 'number'
        ) {
          sockets.push({ kind, name, listen, port, fd: FIRST_SOCKET_FD + i, claimed: false });
        }
      },
    );
    // neither the sockets nor the readiness pipe are for this process's own children
    for (const fd of [READY_FD, ...sockets.map((s) => s.fd)]) closeOnExec(fd);
    return { ready: READY_FD, sockets };
  } catch {
    return null;
  }
}

/** This process was started by an upgrade. */
export function isSuccessor(): boolean {
  return received !== null;
}

/**
 * The handed-over descriptor for this socket, claimed (once), or undefined: bind as usual. The
 * same name and `listen` first; else the same `listen` when its port is fixed (not `:0`).
 */
export function inherited(kind: SocketKind, name: string, listen: string): BoundSocket | undefined {
  const activated = activatedSocket(kind, name); // systemd's, by name (socket-activation.ts)
  if (activated !== undefined) return activated;
  if (received === null) return undefined;
  const free = received.sockets.filter((s) => !s.claimed && s.kind === kind && s.listen === listen);
  const hit = free.find((s) => s.name === name) ?? (/:0$/.test(listen) ? undefined : free[0]);
  if (hit === undefined) return undefined;
  hit.claimed = true;
  return { fd: hit.fd, port: hit.port };
}

/**
 * The process serves: closes the descriptors nothing claimed (sockets the new config no longer
 * listens on) and tells the old process, which then drains. Names what was closed.
 */
export function signalReady(): string[] {
  if (received === null) return [];
  const unclaimed = received.sockets.filter((s) => !s.claimed);
  for (const s of unclaimed) closeQuietly(s.fd);
  try {
    writeSync(received.ready, `ready ${process.pid}\n`);
  } catch {
    // the old process is gone: nobody to tell
  }
  closeQuietly(received.ready);
  received.sockets.length = 0;
  return unclaimed.map((s) => `${s.kind} ${s.name} ${s.listen}`);
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

/** Linux: the addon marks it close-on-exec; elsewhere it stays inheritable (children are short-lived there). */
function closeOnExec(fd: number): void {
  procBinding()?.cloexec(fd);
}
