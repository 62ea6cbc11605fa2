/**
 * A relay's load, ‰, as HELLO_ACK and the `load` REQUEST report it (the agents' adaptive score):
 * the busier of the event loop and the native engine's thread (where native sessions' bytes
 * move; the event loop barely sees them), over the last 2 s.
 */
import { performance } from 'node:perf_hooks';
import { engine } from './native/binding.js';

const INTERVAL_MS = 2000;

export class RelayLoad {
  private elu = performance.eventLoopUtilization();
  private lastBusy = 0;
  private lastAt = 0;
  /** The last interval's, 0–1000. */
  permille = 0;
  private readonly timer: NodeJS.Timeout;

  constructor() {
    this.timer = setInterval(() => this.measure(), INTERVAL_MS);
    this.timer.unref();
  }

  private measure(): void {
    const now = performance.eventLoopUtilization();
    const elu = performance.eventLoopUtilization(now, this.elu).utilization;
    this.elu = now;
    const busy = engine.busyNs();
    const at = performance.now();
    const thread = this.lastAt > 0 ? (busy - this.lastBusy) / ((at - this.lastAt) * 1e6) : 0;
    this.lastBusy = busy;
    this.lastAt = at;
    this.permille = Math.min(1000, Math.round(Math.max(elu, thread) * 1000));
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
