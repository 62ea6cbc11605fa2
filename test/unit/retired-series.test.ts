/** The counters of exited workers are carried, also when two exit at once. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Counter, Gauge, Registry } from 'prom-client';
import { RetiredSeries } from '../../src/workers/retired-series.js';

async function workerSeries(requests: number, active: number) {
  const r = new Registry();
  new Counter({ name: 't_requests_total', help: 'h', registers: [r] }).inc(requests);
  new Gauge({ name: 't_active', help: 'h', registers: [r] }).set(active);
  return r.getMetricsAsJSON();
}

test('two workers retiring at once both stay counted; gauges are not carried', async () => {
  const retired = new RetiredSeries();
  retired.seen(0, await workerSeries(3, 7));
  retired.seen(1, await workerSeries(5, 9));
  const a = retired.retire(0);
  const b = retired.retire(1);
  await Promise.all([a, b]);
  const carried = retired.series();
  assert.deepEqual(
    carried.map((m) => m.name),
    ['t_requests_total'],
  );
  assert.equal(carried[0]?.values[0]?.value, 8);
  // a worker never scraped carries nothing
  await retired.retire(2);
  assert.equal(retired.series()[0]?.values[0]?.value, 8);
});
