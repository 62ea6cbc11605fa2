/**
 * Smooth weighted round robin, as nginx `ngx_http_upstream_get_peer`: every pick adds each
 * eligible endpoint's weight to its `currentWeight`, takes the largest, and subtracts the total
 * from it. Weights 5,1,1 give a a b a c a a — spread out, not bursts.
 */
import type { Endpoint } from '../upstream/endpoint.js';
import { type Balancer, isEligible, type PickContext } from './balancer.js';

export class RoundRobinBalancer implements Balancer {
  readonly policy = 'round_robin' as const;
  private endpoints: readonly Endpoint[] = [];

  update(endpoints: readonly Endpoint[]): void {
    this.endpoints = endpoints;
    for (const e of endpoints) e.currentWeight = 0;
  }

  pick(ctx: PickContext): Endpoint | undefined {
    let best: Endpoint | undefined;
    let total = 0;
    for (const e of this.endpoints) {
      if (!isEligible(e, ctx)) continue;
      e.currentWeight += e.weight;
      total += e.weight;
      if (best === undefined || e.currentWeight > best.currentWeight) best = e;
    }
    if (best !== undefined) best.currentWeight -= total;
    return best;
  }
}
