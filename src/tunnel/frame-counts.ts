/**
 * Frames by type and direction for `zipline_tunnel_frames_total`: counted in typed arrays on the
 * hot path (no label lookup per frame) and added to the metric at scrape time.
 */
import { metrics } from '../metrics/catalog.js';
import { FRAME_NAMES } from './constants.js';

export class FrameCounts {
  readonly in = new Float64Array(256);
  readonly out = new Float64Array(256);
  private readonly flushedIn = new Float64Array(256);
  private readonly flushedOut = new Float64Array(256);

  received(type: number): void {
    this.in[type] = (this.in[type] as number) + 1;
  }

  sent(type: number, n = 1): void {
    this.out[type] = (this.out[type] as number) + n;
  }

  /** Adds what was counted since the last call to the metric. */
  flush(): void {
    flushInto(this.in, this.flushedIn, 'in');
    flushInto(this.out, this.flushedOut, 'out');
  }
}

function flushInto(counts: Float64Array, flushed: Float64Array, direction: 'in' | 'out'): void {
  for (let t = 0; t < 256; t++) {
    const d = (counts[t] as number) - (flushed[t] as number);
    if (d > 0) {
      metrics.tunnelFrames.labels(FRAME_NAMES[t] ?? `0x${t.toString(16)}`, direction).inc(d);
      flushed[t] = counts[t] as number;
    }
  }
}
