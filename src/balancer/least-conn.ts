/**
 * Least connections, weighted (active / weight), as nginx `least_conn`. Ties rotate so that idle
 * servers share new work instead of the first one taking it all.
 */
import type { Endpoint } from '../upstream/endpoint.js';
import { type Balancer, isEligible, type PickContext } from './balancer.js';

export class LeastConnBalancer implements Balancer {
  readonly policy = 'least_conn' as const;
  private endpoints: readonly Endpoint[] = [];
  private offset = 0;

  update(endpoints: readonly Endpoint[]): void {
    this.endpoints = endpoints;
  }

  pick(ctx: PickContext): Endpoint | undefined {
    const list = this.endpoints;
    const n = list.length;
    let best: Endpoint | undefined;
    let bestLoad = Number.POSITIVE_INFINITY;
    const start = this.offset++ % (n || 1);
    for (let i = 0; i < n; i++) {
      const e = list[(start + i) % n] as Endpoint;
      if (!isEligible(e, ctx)) continue;
      const load = e.active / e.weight;
      if (load < bestLoad) {
        bestLoad = load;
        best = e;
      }
    }
    return best;
  }
}
