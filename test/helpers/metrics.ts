/** Reading this process's Prometheus registry in tests (`startRuntime` runs in-process). */
import { registry } from '../../src/metrics/catalog.js';

/** The value of one series, written as the exposition shows it (`name{a="x",b="y"}`); 0 when absent. */
export async function seriesValue(series: string): Promise<number> {
  const text = await registry.metrics();
  const prefix = `${series} `;
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  return line === undefined ? 0 : Number(line.slice(prefix.length));
}
