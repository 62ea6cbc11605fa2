/** What a reload changes in a running tunnel relay and agent (`Runtime.reload`). */
import type { ValidConfig } from '../config/schema.js';
import { sameConfig as same } from '../config/valid.js';
import type { ReloadReport } from '../core/reload-report.js';
import type { TunnelAgent } from './agent.js';
import type { TunnelRelay } from './relay.js';

/**
 * Everything in the tunnel section applies at reload but adding or removing the relay or the
 * agent. The relay: tokens, allow list, timeouts and limits for new sessions and streams; new
 * TLS settings (and certificate files renewed in place) for new sessions; a new `listen` bound
 * beside the old one, which then stops accepting (`rebound`). The agent: its settings for new
 * sessions, streams and connections, its relay list (`TunnelAgent.setRelays`), its entries
 * (`AgentEntries.reload`, listed under `listeners` as `tunnel.agent.KIND`), a new `id` (new
 * sessions with every relay; the open ones finish their streams), its CA files renewed in place.
 * `tunnel.relay` and `tunnel.agent` are listed in `changed` when their TLS or relays changed.
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
  if (relay !== null && r0 !== undefined && r1 !== undefined) {
    if (!same(r0, r1)) relay.update(r1);
    const newTls =
      !same(r0.tls, r1.tls) ||
      r0.ciphers !== r1.ciphers ||
      (r1.tls === 'auto' && r0.state_dir !== r1.state_dir);
    try {
      if (newTls) {
        await relay.setTls(r1);
        changed.push('tunnel.relay');
      } else if (relay.renewTls()) changed.push('tunnel.relay');
    } catch (err) {
      errors.push(`${(err as Error).message}; the previous certificate stays`);
    }
    if (r0.listen !== r1.listen) {
      try {
        await relay.rebind(r1.listen);
        report.listeners.rebound.push('tunnel.relay');
      } catch (err) {
        errors.push(`${(err as Error).message}; the relay stays on ${relay.address()}`);
      }
    }
  } else if (!same(r0, r1)) errors.push('tunnel.relay: adding or removing the relay takes effect at restart');
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
