/**
 * The upstream half of a reload (before the listeners: they look upstreams up by name on every
 * new connection). An upstream whose name stays keeps its endpoints and is given the new settings
 * when they differ, or when a file of its `tls` was renewed in place (same path, new bytes); one
 * whose new settings cannot be compiled (a file of its `tls` cannot be read) keeps its previous
 * settings, and a new one that cannot be is not added: the reload is then `partial`, with the
 * reason in `errors`.
 */
import type { ValidConfig } from '../config/schema.js';
import { sameConfig as same } from '../config/valid.js';
import { compileUpstream } from '../upstream/settings.js';
import type { Upstream } from '../upstream/upstream.js';
import type { ReloadReport } from './reload-report.js';

type UpstreamConfigs = ValidConfig['upstreams'];

/** Applies `next` to `table`; returns the upstreams it removed (the caller closes them). */
export async function reloadUpstreams(
  table: Map<string, Upstream>,
  next: UpstreamConfigs,
  report: ReloadReport,
  add: (name: string, cfg: UpstreamConfigs[string]) => Upstream,
): Promise<Upstream[]> {
  const errors = report.errors as string[];
  for (const [name, cfg] of Object.entries(next)) {
    const cur = table.get(name);
    try {
      if (cur === undefined) {
        await add(name, cfg).start();
        report.upstreams.added.push(name);
      } else if (!same(cur.settings.source, cfg) || cur.settings.tls?.filesChanged() === true) {
        cur.apply(compileUpstream(name, cfg));
        report.upstreams.changed.push(name);
      }
    } catch (err) {
      errors.push(`${(err as Error).message}; ${cur ? 'its previous settings stay' : 'not added'}`);
    }
  }
  const removed: Upstream[] = [];
  for (const [name, up] of table) {
    if (!(name in next)) {
      removed.push(up);
      table.delete(name);
      report.upstreams.removed.push(name);
    }
  }
  return removed;
}
