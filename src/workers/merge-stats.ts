/**
 * `/stats` with workers: each worker's `listeners`, `upstreams` and `retired_listeners` merged
 * into one view, so that the contract's shape (and the dashboard) stay the same.
 *
 * - counts are summed (active connections, totals, failures, health check passes);
 * - `ewma_*` figures are averaged, `down_for_ms` takes the longest;
 * - values every worker has from the config (`weight`, `routes`, `max_connections`) and values
 *   that agree are kept as they are; values that differ (a server `up` in one worker and `down`
 *   in another) become the list of each worker's value, in worker order;
 * - lists of records are matched by `address` (servers) or `name`, else by position.
 */

const AVERAGED = new Set(['ewma_latency_ms', 'failure_ewma']);
const LONGEST = new Set(['down_for_ms']);
const FROM_CONFIG = new Set(['weight', 'routes', 'max_connections']);

type Rec = Record<string, unknown>;
const isRecord = (v: unknown): v is Rec => typeof v === 'object' && v !== null && !Array.isArray(v);

export function mergeStats(views: readonly unknown[], key = ''): unknown {
  const present = views.filter((v) => v !== undefined);
  const first = present[0];
  if (present.length <= 1) return first;
  if (present.every((v) => typeof v === 'number')) return mergeNumbers(present as number[], key);
  if (present.every(isRecord)) {
    const keys = [...new Set(present.flatMap((v) => Object.keys(v)))];
    return Object.fromEntries(
      keys.map((k) => [
        k,
        mergeStats(
          present.map((v) => v[k]),
          k,
        ),
      ]),
    );
  }
  if (present.every(Array.isArray)) return mergeLists(present as unknown[][]);
  const text = JSON.stringify(first);
  return present.every((v) => JSON.stringify(v) === text) ? first : present;
}

function mergeNumbers(nums: number[], key: string): number | number[] {
  if (FROM_CONFIG.has(key)) return nums.every((n) => n === nums[0]) ? (nums[0] as number) : nums;
  if (LONGEST.has(key)) return Math.max(...nums);
  const sum = nums.reduce((a, n) => a + n, 0);
  return AVERAGED.has(key) ? Math.round((sum / nums.length) * 1000) / 1000 : sum;
}

function mergeLists(lists: unknown[][]): unknown[] {
  const idOf = (v: unknown, i: number): string => {
    if (isRecord(v)) {
      if (typeof v.address === 'string') return `a:${v.address}`;
      if (typeof v.name === 'string') return `n:${v.name}`;
    }
    return `i:${i}`;
  };
  const order: string[] = [];
  const byId = new Map<string, unknown[]>();
  for (const list of lists) {
    list.forEach((v, i) => {
      const id = idOf(v, i);
      let group = byId.get(id);
      if (group === undefined) {
        group = [];
        byId.set(id, group);
        order.push(id);
      }
      group.push(v);
    });
  }
  return order.map((id) => mergeStats(byId.get(id) ?? []));
}
