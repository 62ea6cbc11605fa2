/**
 * The listener half of a reload (after the upstreams). A listener keeps its socket when its
 * name, protocol and listen address stay, and is given the new settings when they differ (or a
 * file it names was renewed in place); one removed or re-addressed stops accepting and is
 * retired, its open connections running to their end; new and re-addressed ones are bound. What
 * cannot be applied goes to `errors` (the reload is then `partial`).
 */
import type { ListenerConfig, ValidConfig } from '../config/schema.js';
import { listenerName, sameConfig as same } from '../config/valid.js';
import type { Listener } from '../l4/listener.js';
import { udpKeysForRestart } from '../l4/udp-common.js';
import type { Logger } from '../log/logger.js';
import type { ReloadReport } from './reload-report.js';

export interface ListenerTable {
  /** Stops accepting and keeps it while it has connections (removes it from the table). */
  retire(l: Listener): Promise<void>;
  /** Binds a new one and adds it to the table. */
  add(cfg: ListenerConfig): Promise<Listener>;
  readonly log: Logger;
}

export async function reloadListeners(
  listeners: ReadonlyMap<string, Listener>,
  next: ValidConfig,
  report: ReloadReport,
  table: ListenerTable,
): Promise<void> {
  const errors = report.errors as string[];
  // stop what goes away or moves, then bind what is new
  const wanted = new Map(next.listeners.map((l) => [listenerName(l), l as ListenerConfig]));
  const toStart: ListenerConfig[] = [];
  for (const [name, l] of [...listeners]) {
    const cfg = wanted.get(name);
    if (cfg === undefined || cfg.protocol !== l.protocol || cfg.listen !== l.source.listen) {
      await table.retire(l);
      if (cfg === undefined) report.listeners.removed.push(name);
      else {
        report.listeners.rebound.push(name);
        toStart.push(cfg);
      }
    } else {
      try {
        // the same config: applied again only when a file it names was renewed in place
        // (an https listener's certificate, written by certbot to the same path)
        if (same(cfg, l.source) && l.filesChanged?.() !== true) continue;
        if (cfg.protocol === 'udp' && l.source.protocol === 'udp') {
          for (const key of udpKeysForRestart(l.source, cfg)) {
            errors.push(
              `listener ${name}: "${key}" of a UDP listener takes effect at restart; the rest was applied`,
            );
          }
        }
        l.update(cfg);
        report.listeners.changed.push(name);
      } catch (err) {
        // e.g. an https listener's new certificate cannot be read: it keeps the old settings
        errors.push(`listener ${name}: ${(err as Error).message}; its previous settings stay`);
      }
    }
  }
  for (const [name, cfg] of wanted) {
    if (!listeners.has(name) && !toStart.includes(cfg)) {
      toStart.push(cfg);
      report.listeners.added.push(name);
    }
  }
  for (const cfg of toStart) {
    try {
      const l = await table.add(cfg);
      table.log.info({ listener: l.name, protocol: l.protocol, address: l.address() }, 'listening');
    } catch (err) {
      errors.push((err as Error).message);
    }
  }
}
