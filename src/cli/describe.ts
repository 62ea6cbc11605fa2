/** The human summary printed by `zipline check`. Secrets (the admin token) are never printed. */
import type { ValidConfig } from '../config/schema.js';
import { listenerName } from '../core/runtime.js';

export function describeConfig(c: ValidConfig): string {
  const lines: string[] = [];
  lines.push(`admin: http://${c.admin.listen}/ (token ${c.admin.token ? 'set' : 'not set'})`);
  lines.push(`workers: ${c.workers}, drain_timeout: ${c.drain_timeout}ms, access log: ${c.log.access}`);
  for (const l of c.listeners) {
    const up = 'upstream' in l && l.upstream !== undefined ? ` -> ${String(l.upstream)}` : '';
    const routes =
      (l.protocol === 'http' || l.protocol === 'https') && l.routes.length > 0
        ? ` (${l.routes.map((r) => `${r.match.host ?? '*'}${r.match.path_prefix} -> ${r.upstream}`).join(', ')})`
        : '';
    lines.push(`listener ${listenerName(l)}: ${l.protocol} ${String(l.listen)}${up}${routes}`);
  }
  for (const [name, u] of Object.entries(c.upstreams)) {
    const hc = u.health_check ? `, health ${u.health_check.type} every ${u.health_check.interval}ms` : '';
    lines.push(`upstream ${name}: ${u.balance}, ${u.servers.map((s) => s.address).join(' ')}${hc}`);
  }
  for (const b of c.shm) {
    lines.push(
      `shm ${b.name}: ${b.segment}, snapshot ${b.snapshot_capacity} B, rings ${b.slots} × ${b.slot_size} B, wake ${b.wake}, http://${b.http}/shm/${b.name}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
