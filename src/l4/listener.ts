/** What the runtime needs from any listener, whatever its protocol. */
import type { ListenerConfig } from '../config/schema.js';

export interface Listener {
  readonly name: string;
  readonly protocol: ListenerConfig['protocol'];
  /** The validated config it runs (for reload diffs). */
  readonly source: ListenerConfig;
  /** Binds; rejects with a coded error when the address cannot be had. */
  start(): Promise<void>;
  /** The bound address (`host:port`), known after `start()`. */
  address(): string;
  /** Applies a config with the same protocol and listen address without rebinding. */
  update(source: ListenerConfig): void;
  /**
   * Files its config names (an https listener's certificates) were renewed in place since they
   * were read, so a reload with the same config applies it again; throws a coded error when one
   * cannot be read. Absent: it reads none.
   */
  filesChanged?(): boolean;
  /** Stops accepting; established connections and sessions continue. */
  stopAccepting(): Promise<void>;
  /**
   * Closes the listening socket only, serving as before until `stopAccepting` (workers: every
   * worker's socket closes before any drains, so the reconnects a drain's `Connection: close`
   * brings never queue on a socket about to close). Absent: `stopAccepting` does it.
   */
  closeSocket?(): Promise<void>;
  /**
   * An upgrade handed its socket to a new process, which reads it from now on (UDP: a listening
   * TCP socket simply stops being accepted on). Absent: nothing to do.
   */
  handOver?(): void;
  /** Open connections (TCP) or sessions (UDP). */
  activeCount(): number;
  /** Closes every connection/session at once. */
  destroyAll(): void;
  stats(): Record<string, unknown>;
  /** Brings counters kept off the hot path up to date (called before a metrics scrape). */
  refreshMetrics(): void;
}
