/** What a reload changes in a running tunnel relay and agent (`Runtime.reload`). */
import type { ValidConfig } from '../config/schema.js';
import { sameConfig as same } from '../config/valid.js';
import type { ReloadReport } from '../core/reload-report.js';
import type { TunnelAgent } from './agent.js';
import type { TunnelRelay } from './relay.js';

/**
 * Relay tokens, allow list, timeouts and limits, and the agent's token, timeouts and
 * compression apply at once (new sessions and streams), as do the agent's relay list (relays
 * added are connected to, those removed retired: `TunnelAgent.setRelays`) and its entries
 * (`AgentEntries.reload`: as listeners, listed under `listeners` as `tunnel.agent.KIND`); a new
 * agent `id` makes new sessions with every relay (the open ones finish their streams). The
 * relay's address and TLS settings take effect at restart. The relay's certificate files and the
 * agent's CA files are read again at every reload: renewed in place, they are what new sessions
 * get (`tunnel.relay`, `tunnel.agent` listed in `changed`).
 */
export async function reloadTunnel(
  cur: ValidConfig['tunnel'],
  nxt: ValidConfig['tunnel'],
  relay: TunnelRelay | null,
  agent: TunnelAgent | null,
  report: { readonly errors: string[]; readonly listeners: ReloadReport['listeners'] },
): Promise<void> {
  const { errors } = report;
  const changed = report.listeners.changed;
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
      if (relay.renewTls()) changed.push('tunnel.relay');
    } catch (err) {
      errors.push(`${(err as Error).message}; the previous certificate stays`);
    }
  } else if (!same(r0, r1))
    errors.push('tunnel.relay: listen/tls changes (or adding/removing the relay) take effect at restart');
  const a0 = cur?.agent;
  const a1 = nxt?.agent;
  if (agent !== null && a0 !== undefined && a1 !== undefined) {
    if (!same(a0, a1)) {
      const entries = await agent.update(a1);
      for (const key of ['added', 'removed', 'rebound', 'changed'] as const)
        report.listeners[key].push(...entries[key]);
      errors.push(...entries.errors);
    }
    let renewed = false;
    try {
      // a new id: every session again, saying it in its HELLO (open ones finish their streams)
      renewed = agent.setRelays(a1.relays, a0.id !== a1.id);
    } catch (err) {
      errors.push(`${(err as Error).message}; the previous relay list stays`);
    }
    try {
      renewed = agent.renewCa() || renewed;
    } catch (err) {
      errors.push(`${(err as Error).message}; the previous one stays`);
    }
    if (renewed) changed.push('tunnel.agent');
  } else if (!same(a0, a1)) errors.push('tunnel.agent: adding or removing the agent takes effect at restart');
}
