/**
 * The primary's side of the workers' addresses.
 *
 * Port 0: every worker must bind the *same* port for SO_REUSEPORT to share it, so the primary
 * picks it once: it binds a SO_REUSEPORT socket on port 0 and rewrites the listener's address for
 * the workers. A TCP reservation stays bound (never listening, so it is given no connections)
 * until the listener goes away, which keeps the port ours across worker restarts. A UDP one
 * stays bound only until the workers have bound theirs (`settle()`), since a bound UDP socket
 * is given a share of the datagrams; nobody knows a port-0 address before then, so none is lost.
 * (It used to be closed at once: another process could take the port before the workers bound
 * it, seen once in the test suite as EADDRINUSE.)
 *
 * A fixed port: SO_REUSEPORT would let the workers join sockets another process of the same user
 * already has there (a second zipline started on the same config), and the two would silently
 * share the traffic. So before the workers first bind an address, the primary binds it once
 * *without* SO_REUSEPORT (TCP with SO_REUSEADDR, so connections in TIME_WAIT do not count) and
 * closes it: if that fails, the address is someone else's and the listener fails with
 * ZL_LISTEN_FAILED, as it would in one process. (A check, not a lock: two instances started in the
 * same instant can both pass it.)
 *
 * An upgrade (core/handover.ts): the old primary hands its TCP reservations to the new one, which
 * keeps their ports, and the new primary does not probe the fixed addresses of its first config:
 * the old workers hold them until they have drained, beside the new workers' sockets.
 */

import { closeSync } from 'node:fs';
import type { ValidConfig } from '../config/schema.js';
import { formatHostPort, parseHostPort } from '../config/units.js';
import { listenerName } from '../config/valid.js';
import { inherited, isSuccessor, offer, withdraw } from '../core/handover.js';
import { ZiplineError } from '../errors.js';
import { bindFailure } from '../l4/bind-failure.js';
import { bindSocket } from '../l4/listen.js';

interface Reservation {
  readonly port: number;
  /** The bound socket; -1 once a UDP one was settled. */
  fd: number;
  readonly udp: boolean;
}

export interface ResolvedConfig {
  /** What the workers run: port-0 listeners on their reserved port, taken addresses left out. */
  readonly config: ValidConfig;
  /** Listeners left out because their fixed address is in use by another process. */
  readonly errors: ZiplineError[];
}

export class PortReservations {
  /** By listener name and address as written. */
  private readonly held = new Map<string, Reservation>();
  /** Fixed addresses the workers have been given (`tcp|udp address`): not probed again. */
  private owned = new Set<string>();
  /** Started by an upgrade and not resolved yet: the old workers hold the fixed addresses. */
  private trustFixed = isSuccessor();

  /**
   * The config the workers run: port-0 listeners on their reserved port, and fixed addresses
   * checked free the first time they appear (see the header). Releases what is gone.
   */
  async resolve(config: ValidConfig): Promise<ResolvedConfig> {
    const wanted = new Set<string>();
    const owned = new Set<string>();
    const errors: ZiplineError[] = [];
    const listeners: ValidConfig['listeners'] = [];
    for (const l of config.listeners) {
      const hp = parseHostPort(l.listen);
      if (hp === undefined) {
        listeners.push(l);
        continue;
      }
      const udp = l.protocol === 'udp';
      if (hp.port !== 0) {
        const key = `${udp ? 'udp' : 'tcp'} ${l.listen}`;
        if (!this.owned.has(key) && !this.trustFixed) {
          const err = await probe(listenerName(l), hp.host, hp.port, udp);
          if (err !== null) {
            errors.push(err);
            continue;
          }
        }
        owned.add(key);
        listeners.push(l);
        continue;
      }
      const key = `${listenerName(l)} ${l.protocol} ${l.listen}`;
      wanted.add(key);
      let r = this.held.get(key);
      if (r === undefined) {
        r = await reserve(listenerName(l), l.listen, hp.host, l.protocol === 'udp');
        this.held.set(key, r);
      }
      listeners.push({ ...l, listen: formatHostPort(hp.host, r.port) });
    }
    for (const [key, r] of this.held) {
      if (!wanted.has(key)) {
        release(r);
        this.held.delete(key);
      }
    }
    this.owned = owned;
    this.trustFixed = false;
    return { config: { ...config, listeners }, errors };
  }

  /** The workers have bound their sockets: UDP reservations are closed (see the header). */
  settle(): void {
    for (const r of this.held.values()) {
      if (r.udp) release(r);
    }
  }

  releaseAll(): void {
    for (const r of this.held.values()) release(r);
    this.held.clear();
    this.owned.clear();
  }
}

/** Binds `host:port` once without SO_REUSEPORT and closes it: null when free, else the error. */
async function probe(name: string, host: string, port: number, udp: boolean): Promise<ZiplineError | null> {
  try {
    const [fd] = await bindSocket(host, port, !udp, false);
    closeSync(fd);
    return null;
  } catch (err) {
    const at = formatHostPort(host, port);
    return new ZiplineError(
      'ZL_LISTEN_FAILED',
      `listener ${name}: cannot listen on ${at}: ${bindFailure(err, at, 'another process holds it: with workers, possibly another zipline')}`,
      { cause: err },
    );
  }
}

async function reserve(name: string, listen: string, host: string, udp: boolean): Promise<Reservation> {
  const kind = udp ? 'udp' : 'tcp';
  try {
    // an upgrade's: the old primary's reservation, and with it the port its workers listen on
    const handed = inherited(kind, name, listen);
    const [fd, port] = handed ? [handed.fd, handed.port] : await bindSocket(host, 0, !udp, true);
    const r: Reservation = { port, fd, udp };
    offer(r, kind, name, listen, () => (r.fd >= 0 ? { fd: r.fd, port: r.port } : null));
    return r;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ZiplineError(
      'ZL_LISTEN_FAILED',
      `listener ${name}: cannot pick a port on ${host}: ${e.code ?? e.message}`,
      {
        cause: err,
      },
    );
  }
}

function release(r: Reservation): void {
  withdraw(r);
  if (r.fd >= 0) closeSync(r.fd);
  r.fd = -1;
}
