import { AdaptiveBalancer } from './adaptive.js';
import type { BalancePolicy, Balancer } from './balancer.js';
import { HashBalancer } from './hash.js';
import { LeastConnBalancer } from './least-conn.js';
import { P2cBalancer } from './p2c.js';
import { RandomBalancer } from './random.js';
import { RoundRobinBalancer } from './round-robin.js';

export type { BalancePolicy, Balancer, PickContext } from './balancer.js';

export const BALANCE_POLICIES: readonly BalancePolicy[] = [
  'round_robin',
  'least_conn',
  'p2c',
  'random',
  'hash',
  'adaptive',
];

export function createBalancer(policy: BalancePolicy): Balancer {
  switch (policy) {
    case 'round_robin':
      return new RoundRobinBalancer();
    case 'least_conn':
      return new LeastConnBalancer();
    case 'p2c':
      return new P2cBalancer();
    case 'random':
      return new RandomBalancer();
    case 'hash':
      return new HashBalancer();
    case 'adaptive':
      return new AdaptiveBalancer();
  }
}
