/**
 * The balancer contract. A balancer holds the current endpoint list (`update`) and picks one
 * endpoint per attempt among the *eligible* ones: up, with spare capacity, and not already tried
 * by this request. Picking never allocates.
 */
import type { Endpoint } from '../upstream/endpoint.js';

export interface PickContext {
  /** 32-bit hash of the request's key (client IP, header, path); used by `hash`. */
  hash: number;
  /** Endpoints already tried by this request (excluded); usually empty. */
  tried: readonly Endpoint[];
  /** `Date.now()` of this pick (one clock read per pick). */
  now: number;
}

export interface Balancer {
  readonly policy: BalancePolicy;
  update(endpoints: readonly Endpoint[]): void;
  pick(ctx: PickContext): Endpoint | undefined;
}

export type BalancePolicy = 'round_robin' | 'least_conn' | 'p2c' | 'random' | 'hash' | 'adaptive';

export function isEligible(e: Endpoint, ctx: PickContext): boolean {
  return e.isUp(ctx.now) && e.hasCapacity() && !ctx.tried.includes(e);
}

/** Uniform random integer in [0, n). */
export function randomInt(n: number): number {
  return Math.floor(Math.random() * n);
}
