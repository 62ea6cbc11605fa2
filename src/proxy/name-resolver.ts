/**
 * Looks up the names clients ask to reach (tunnel relay streams, `socks5` and `http_proxy`
 * listeners). The system resolver is kept (getaddrinfo: /etc/hosts, search domains, nsswitch, as
 * curl and nginx's start-up see names), but it runs on libuv's thread pool and cannot be
 * cancelled: with a DNS server that does not answer, each lookup holds a thread for the resolver's
 * whole timeout (5 s × attempts with glibc), so a client asking for a few dead names used to hold
 * every thread: every other client's names waited behind them and so did the access log's writes.
 *
 * So, one process-wide gate:
 * - a name being looked up is not looked up again: later callers share the answer;
 * - at most `slots` lookups run (4 of the pool's 8 threads: `bin/zipline.js` raises libuv's
 *   default of 4 unless `UV_THREADPOOL_SIZE` is set), and one client runs at most `perClient` of
 *   them while others wait, so a client with dead names holds its own share, not everyone's;
 * - waiting lookups start round-robin by client; a wait whose caller gave up (its deadline) is
 *   dropped before it starts;
 * - at most `maxWaitingPerClient` waiting for one client and `maxWaiting` in all; beyond, the
 *   request fails at once (`ZL_DNS_BUSY`).
 * Clients are what the caller names them: a relay's agent, a proxy client's address.
 */
import { lookup } from 'node:dns';
import { metrics } from '../metrics/catalog.js';

export type LookupOne = (
  host: string,
  done: (err: NodeJS.ErrnoException | null, address: string) => void,
) => void;

const systemLookup: LookupOne = (host, done) =>
  lookup(host, { verbatim: true }, (err, address) => done(err, address));

/** Why a name was not resolved: `code` is the errno (`ENOTFOUND`, ...), `ETIMEDOUT` or `EBUSY`. */
export type ResolveError = Error & { code: string };

function resolveError(code: string, message: string): ResolveError {
  return Object.assign(new Error(message), { code });
}

interface Waiter {
  resolve(address: string): void;
  reject(err: ResolveError): void;
  timer: NodeJS.Timeout;
}

interface Entry {
  readonly host: string;
  readonly client: string;
  readonly waiters: Set<Waiter>;
  running: boolean;
}

export interface NameResolverOptions {
  readonly lookup?: LookupOne;
  readonly slots?: number;
  readonly perClient?: number;
  readonly maxWaiting?: number;
  readonly maxWaitingPerClient?: number;
}

export class NameResolver {
  private readonly lookup: LookupOne;
  private readonly slots: number;
  private readonly perClient: number;
  private readonly maxWaiting: number;
  private readonly maxWaitingPerClient: number;
  /** By name: the lookup running or waiting for it. */
  private readonly entries = new Map<string, Entry>();
  /** Waiting lookups by client. */
  private readonly queues = new Map<string, Entry[]>();
  private readonly runningBy = new Map<string, number>();
  /** When each client with lookups running or waiting last had one started (a sequence number). */
  private readonly servedAt = new Map<string, number>();
  private served = 0;
  private running = 0;
  private waiting = 0;

  constructor(options: NameResolverOptions = {}) {
    this.lookup = options.lookup ?? systemLookup;
    this.slots = options.slots ?? 4;
    this.perClient = options.perClient ?? 2;
    this.maxWaiting = options.maxWaiting ?? 1024;
    this.maxWaitingPerClient = options.maxWaitingPerClient ?? 64;
  }

  /** The first address of `host`, or a ResolveError; gives up after `timeoutMs`. */
  resolve(host: string, client: string, timeoutMs: number): Promise<string> {
    const name = host.toLowerCase();
    return new Promise((resolve, reject) => {
      let entry = this.entries.get(name);
      if (entry === undefined) {
        const queue = this.queues.get(client);
        if (this.waiting >= this.maxWaiting || (queue?.length ?? 0) >= this.maxWaitingPerClient) {
          metrics.destinationLookups.labels('busy').inc();
          reject(resolveError('EBUSY', 'too many name lookups waiting'));
          return;
        }
        entry = { host: name, client, waiters: new Set(), running: false };
        this.entries.set(name, entry);
        if (queue === undefined) this.queues.set(client, [entry]);
        else queue.push(entry);
        this.waiting++;
      } else {
        metrics.destinationLookups.labels('shared').inc();
      }
      const e = entry;
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => this.giveUp(e, waiter), timeoutMs),
      };
      e.waiters.add(waiter);
      this.pump();
    });
  }

  /** Lookups running and waiting now (for stats and tests). */
  load(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.waiting };
  }

  private giveUp(entry: Entry, waiter: Waiter): void {
    entry.waiters.delete(waiter);
    waiter.reject(resolveError('ETIMEDOUT', 'name lookup timed out'));
    if (entry.running || entry.waiters.size > 0) return;
    // nobody wants it any more and it has not started: it never will
    this.entries.delete(entry.host);
    const queue = this.queues.get(entry.client);
    if (queue !== undefined) {
      queue.splice(queue.indexOf(entry), 1);
      if (queue.length === 0) {
        this.queues.delete(entry.client);
        if (!this.runningBy.has(entry.client)) this.servedAt.delete(entry.client);
      }
    }
    this.waiting--;
    metrics.destinationLookups.labels('expired').inc();
  }

  /**
   * Starts waiting lookups while slots are free: each time for the client below its share whose
   * last start is the oldest (round-robin, whatever order the names arrived in).
   */
  private pump(): void {
    while (this.running < this.slots) {
      let pick: string | undefined;
      let oldest = Number.POSITIVE_INFINITY;
      for (const client of this.queues.keys()) {
        if ((this.runningBy.get(client) ?? 0) >= this.perClient) continue;
        const at = this.servedAt.get(client) ?? -1;
        if (at < oldest) {
          oldest = at;
          pick = client;
        }
      }
      if (pick === undefined) return;
      const queue = this.queues.get(pick) as Entry[];
      const next = queue.shift() as Entry;
      if (queue.length === 0) this.queues.delete(pick);
      this.waiting--;
      this.servedAt.set(pick, this.served++);
      this.start(next);
    }
  }

  private start(entry: Entry): void {
    entry.running = true;
    this.running++;
    this.runningBy.set(entry.client, (this.runningBy.get(entry.client) ?? 0) + 1);
    const started = performance.now();
    this.lookup(entry.host, (err, address) => {
      metrics.destinationLookupDuration.observe((performance.now() - started) / 1000);
      metrics.destinationLookups.labels(err ? 'failed' : 'ok').inc();
      this.running--;
      const n = (this.runningBy.get(entry.client) ?? 1) - 1;
      if (n > 0) this.runningBy.set(entry.client, n);
      else {
        this.runningBy.delete(entry.client);
        if (!this.queues.has(entry.client)) this.servedAt.delete(entry.client);
      }
      this.entries.delete(entry.host);
      for (const w of entry.waiters) {
        clearTimeout(w.timer);
        if (err) w.reject(resolveError(err.code ?? 'ENOTFOUND', err.message));
        else w.resolve(address);
      }
      entry.waiters.clear();
      this.pump();
    });
  }
}

/** The process's one gate: the thread pool it protects is the process's. */
export const destinationResolver = new NameResolver();
