/**
 * Adaptive: the design's score, lower is better,
 *
 *   score = 0.5·latency + 0.3·load + 0.2·stability
 *
 * with each term normalised to [0, 1] across the eligible endpoints of this pick:
 * - latency   = EWMA latency / the largest EWMA latency among them (connect time for L4,
 *               response-header time for HTTP); an endpoint without samples counts as 0, so a new
 *               server is tried at once;
 * - load      = active connections / (mean active connections among them + 1): 0 when idle,
 *               about 1 at an even share, up to N when one endpoint holds everything. It is
 *               deliberately not capped at 1: a capped load term (0.3) could never outweigh a
 *               large latency gap (0.5), and the fastest server would take all traffic however
 *               busy it got;
 * - stability = EWMA of recent outcomes, 0 (all succeeded) … 1 (all failed).
 *
 * Ties rotate. Because load grows on the preferred endpoint, traffic spreads once the faster
 * server is busy (with a 10× latency gap the faster one settles near 85 % of concurrent
 * connections); a slower one keeps receiving the overflow and so keeps its latency sample fresh.
 */
import type { Endpoint } from '../upstream/endpoint.js';
import { type Balancer, isEligible, type PickContext } from './balancer.js';

export const ADAPTIVE_WEIGHTS = { latency: 0.5, load: 0.3, stability: 0.2 } as const;

export class AdaptiveBalancer implements Balancer {
  readonly policy = 'adaptive' as const;
  private endpoints: readonly Endpoint[] = [];
  private offset = 0;

  update(endpoints: readonly Endpoint[]): void {
    this.endpoints = endpoints;
  }

  pick(ctx: PickContext): Endpoint | undefined {
    const list = this.endpoints;
    let maxLatency = 0;
    let totalActive = 0;
    let eligible = 0;
    for (const e of list) {
      if (!isEligible(e, ctx)) continue;
      eligible++;
      totalActive += e.active;
      if (e.ewmaLatencyMs > maxLatency) maxLatency = e.ewmaLatencyMs;
    }
    const loadScale = eligible > 0 ? totalActive / eligible + 1 : 1;
    const n = list.length;
    const start = this.offset++ % (n || 1);
    let best: Endpoint | undefined;
    let bestScore = Number.POSITIVE_INFINITY;
    for (let i = 0; i < n; i++) {
      const e = list[(start + i) % n] as Endpoint;
      if (!isEligible(e, ctx)) continue;
      const s = score(e, maxLatency, loadScale);
      if (s < bestScore) {
        bestScore = s;
        best = e;
      }
    }
    return best;
  }
}

export function score(e: Endpoint, maxLatency: number, loadScale: number): number {
  const latency = maxLatency > 0 ? e.ewmaLatencyMs / maxLatency : 0;
  const load = e.active / loadScale;
  return (
    ADAPTIVE_WEIGHTS.latency * latency +
    ADAPTIVE_WEIGHTS.load * load +
    ADAPTIVE_WEIGHTS.stability * e.failureEwma
  );
}
