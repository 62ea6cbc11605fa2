/** Weighted random choice among eligible endpoints. */
import type { Endpoint } from '../upstream/endpoint.js';
import { type Balancer, isEligible, type PickContext } from './balancer.js';

export class RandomBalancer implements Balancer {
  readonly policy = 'random' as const;
  private endpoints: readonly Endpoint[] = [];

  update(endpoints: readonly Endpoint[]): void {
    this.endpoints = endpoints;
  }

  pick(ctx: PickContext): Endpoint | undefined {
    let total = 0;
    for (const e of this.endpoints) if (isEligible(e, ctx)) total += e.weight;
    if (total === 0) return undefined;
    let r = Math.random() * total;
    for (const e of this.endpoints) {
      if (!isEligible(e, ctx)) continue;
      r -= e.weight;
      if (r < 0) return e;
    }
    return undefined;
  }
}
