/**
 * What replaced workers had counted. A worker that exits takes its counters with it, and its
 * replacement starts from zero: summed over the workers, `/metrics` would go *down*, which
 * Prometheus reads as a counter reset (and `rate()` as a burst). So the primary keeps each
 * worker's series from the latest scrape, and when a worker exits its counters and histograms
 * (never its gauges) are added to a carried set that every later scrape includes. What a worker
 * counted after the last scrape before it died is lost; the sums never go down.
 */
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

const CARRIED_TYPES = new Set(['counter', 'histogram']);

export class RetiredSeries {
  /** Each running worker's series, as of the latest scrape. */
  private readonly latest = new Map<number, MetricsJson>();
  private carried: MetricsJson = [];
  /** Retirements merge one after another (two workers exiting together must not both start
   * from the same carried set: one would be lost). */
  private merging: Promise<void> = Promise.resolve();

  /** Worker `index` answered a scrape with `series`. */
  seen(index: number, series: MetricsJson): void {
    this.latest.set(index, series);
  }

  /** Worker `index` exited: what it had counted is carried from now on. */
  retire(index: number): Promise<void> {
    const last = this.latest.get(index);
    this.latest.delete(index);
    const counted = last?.filter((m) => CARRIED_TYPES.has(String(m.type))) ?? [];
    if (counted.length === 0) return this.merging;
    this.merging = this.merging.then(async () => {
      const merged = AggregatorRegistry.aggregate([this.carried, counted]);
      this.carried = (await merged.getMetricsAsJSON()) as MetricsJson;
    });
    return this.merging;
  }

  /** The carried series, for a scrape to add in. */
  series(): MetricsJson {
    return this.carried;
  }
}
