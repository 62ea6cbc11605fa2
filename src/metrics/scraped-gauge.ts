/**
 * A gauge series kept from a plain count at scrape time (no gauge call on the hot path), moved by
 * what changed since the last scrape rather than set: owners that share its labels (a listener
 * and the one a reload retired under the same name) add up instead of overwriting each other.
 */
export class ScrapedGauge {
  private reported = 0;

  constructor(private readonly series: { inc(value: number): void }) {}

  report(count: number): void {
    this.series.inc(count - this.reported);
    this.reported = count;
  }
}
