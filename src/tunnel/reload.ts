/** What a reload changes in a running tunnel relay and agent (`Runtime.reload`). */
import type { ValidConfig } from '../config/schema.js';
import { sameConfig as same } from '../config/valid.js';
import type { TunnelAgent } from './agent.js';
import type { TunnelRelay } from './relay.js';

/**
 * Relay tokens, allow list, timeouts and limits, and the agent's token, timeouts and
 * compression apply at once (new sessions and streams), as does the agent's relay list (relays
 * added or changed are connected to, those removed retired: `TunnelAgent.setRelays`); the relay's
 * address and TLS settings and the agent's entries and id take effect at restart (sessions and local ports outlive a config generation). The
 * relay's certificate files and the agent's CA files are read again at every reload: renewed in
 * place, they are what new sessions get (`tunnel.relay`, `tunnel.agent` listed in `changed`).
 */
export function reloadTunnel(
  cur: ValidConfig['tunnel'],
  nxt: ValidConfig['tunnel'],
  relay: TunnelRelay | null,
  agent: TunnelAgent | null,
  report: { readonly errors: string[]; readonly changed: string[] },
): void {
  const { errors } = report;
  const r0 = cur?.relay;
  const r1 = nxt?.relay;
  if (
    relay !== null &&
    r0 !== undefined &&
    r1 !== undefined &&
    r0.listen === r1.listen &&
    same(r0.tls, r1.tls) &&
    r0.ciphers === r1.ciphers
  ) {
    if (!same(r0, r1)) relay.update(r1);
    try {
      if (relay.renewTls()) report.changed.push('tunnel.relay');
    } catch (err) {
      errors.push(`${(err as Error).message}; the previous certificate stays`);
    }
  } else if (!same(r0, r1))
    errors.push('tunnel.relay: listen/tls changes (or adding/removing the relay) take effect at restart');
  const a0 = cur?.agent;
  const a1 = nxt?.agent;
  const fixed = (a: typeof a0) => (a === undefined ? null : [a.forwards, a.socks5, a.http_proxy, a.id]);
  if (agent !== null && a1 !== undefined && same(fixed(a0), fixed(a1))) {
    if (!same(a0, a1)) agent.update(a1);
    let changed = false;
    try {
      changed = agent.setRelays(a1.relays);
    } catch (err) {
      errors.push(`${(err as Error).message}; the previous relay list stays`);
    }
    try {
      changed = agent.renewCa() || changed;
    } catch (err) {
      errors.push(`${(err as Error).message}; the previous one stays`);
    }
    if (changed) report.changed.push('tunnel.agent');
  } else if (!same(a0, a1)) errors.push('tunnel.agent: entries and id take effect at restart');
}
