/**
 * Consistent hashing on a ketama-style ring: each endpoint owns `POINTS_PER_WEIGHT × weight`
 * points placed by hashing its address, a key maps to the first point at or after its hash.
 * Adding one server to N moves about 1/(N+1) of the keys; removing one moves only its own keys.
 * An ineligible owner passes the key to the next eligible point on the ring (stable fallback).
 */
import type { Endpoint } from '../upstream/endpoint.js';
import { type Balancer, isEligible, type PickContext } from './balancer.js';
import { hash32 } from './hash-fn.js';

export const POINTS_PER_WEIGHT = 160;

export class HashBalancer implements Balancer {
  readonly policy = 'hash' as const;
  private points = new Uint32Array(0);
  private owners: Endpoint[] = [];

  update(endpoints: readonly Endpoint[]): void {
    const pairs: { point: number; owner: Endpoint }[] = [];
    for (const e of endpoints) {
      const n = POINTS_PER_WEIGHT * e.weight;
      for (let i = 0; i < n; i++) pairs.push({ point: hash32(`${e.address}-${i}`), owner: e });
    }
    pairs.sort((a, b) => a.point - b.point);
    this.points = Uint32Array.from(pairs, (p) => p.point);
    this.owners = pairs.map((p) => p.owner);
  }

  pick(ctx: PickContext): Endpoint | undefined {
    const n = this.points.length;
    if (n === 0) return undefined;
    // first point >= hash (binary search), wrapping around
    let lo = 0;
    let hi = n;
    const h = ctx.hash >>> 0;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.points[mid] as number) < h) lo = mid + 1;
      else hi = mid;
    }
    for (let i = 0; i < n; i++) {
      const owner = this.owners[(lo + i) % n] as Endpoint;
      if (isEligible(owner, ctx)) return owner;
    }
    return undefined;
  }
}
