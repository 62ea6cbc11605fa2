/**
 * Port 0 with workers. Every worker must bind the *same* port for SO_REUSEPORT to share it, so
 * the primary picks it once: it binds a SO_REUSEPORT socket on port 0 and rewrites the listener's
 * address for the workers. A TCP reservation stays bound (never listening, so it is given no
 * connections) until the listener goes away, which keeps the port ours across worker restarts;
 * a UDP one is closed at once, since a bound UDP socket would be given datagrams.
 */

import { closeSync } from 'node:fs';
import { listenerName, type ValidConfig } from '../config/schema.js';
import { formatHostPort, parseHostPort } from '../config/units.js';
import { ZiplineError } from '../errors.js';
import { bindReusePort } from '../l4/listen.js';

interface Reservation {
  readonly port: number;
  /** The bound TCP socket, or -1 (UDP). */
  readonly fd: number;
}

export class PortReservations {
  /** By listener name and address as written. */
  private readonly held = new Map<string, Reservation>();

  /** The config the workers run: port-0 listeners on their reserved port. Releases what is gone. */
  async resolve(config: ValidConfig): Promise<ValidConfig> {
    const wanted = new Set<string>();
    const listeners: ValidConfig['listeners'] = [];
    for (const l of config.listeners) {
      const hp = parseHostPort(l.listen);
      if (hp === undefined || hp.port !== 0) {
        listeners.push(l);
        continue;
      }
      const key = `${listenerName(l)} ${l.protocol} ${l.listen}`;
      wanted.add(key);
      let r = this.held.get(key);
      if (r === undefined) {
        r = await reserve(listenerName(l), hp.host, l.protocol === 'udp');
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
    return { ...config, listeners };
  }

  releaseAll(): void {
    for (const r of this.held.values()) release(r);
    this.held.clear();
  }
}

async function reserve(name: string, host: string, udp: boolean): Promise<Reservation> {
  try {
    const [fd, port] = await bindReusePort(host, 0, !udp);
    if (!udp) return { port, fd };
    closeSync(fd);
    return { port, fd: -1 };
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
  if (r.fd >= 0) closeSync(r.fd);
}
