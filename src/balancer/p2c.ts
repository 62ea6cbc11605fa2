/**
 * Power of two choices (Mitzenmacher; Envoy's least-request default): sample two distinct
 * eligible endpoints at random and take the one with fewer active connections per weight.
 * Nearly as good as least_conn, without a full scan's herd effect across many proxies.
 */
import type { Endpoint } from '../upstream/endpoint.js';
import { type Balancer, isEligible, type PickContext, randomInt } from './balancer.js';

export class P2cBalancer implements Balancer {
  readonly policy = 'p2c' as const;
  private endpoints: readonly Endpoint[] = [];

  update(endpoints: readonly Endpoint[]): void {
    this.endpoints = endpoints;
  }

  pick(ctx: PickContext): Endpoint | undefined {
    const list = this.endpoints;
    let eligible = 0;
    for (const e of list) if (isEligible(e, ctx)) eligible++;
    if (eligible === 0) return undefined;
    const ia = randomInt(eligible);
    const a = this.nth(ia, ctx);
    if (eligible === 1) return a;
    let ib = randomInt(eligible - 1);
    if (ib >= ia) ib++; // a distinct second sample, uniformly
    const b = this.nth(ib, ctx);
    if (a === undefined || b === undefined) return a ?? b;
    return a.active / a.weight <= b.active / b.weight ? a : b;
  }

  private nth(k: number, ctx: PickContext): Endpoint | undefined {
    let i = 0;
    for (const e of this.endpoints) {
      if (!isEligible(e, ctx)) continue;
      if (i++ === k) return e;
    }
    return undefined;
  }
}
