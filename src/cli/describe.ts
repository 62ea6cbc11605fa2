/** The human summary printed by `zipline check`. Secrets (the admin token) are never printed. */
import { availableParallelism } from 'node:os';
import { exposureWarning } from '../admin/auth.js';
import type { HttpRouteConfig, ValidConfig } from '../config/schema.js';
import { formatDuration, formatHostPort, parseHostPort } from '../config/units.js';
import { listenerName } from '../config/valid.js';
import { realIpWarning } from '../http/real-ip.js';
import { h2HeadWarning } from '../http/settings.js';
import { openProxyWarning } from '../proxy/proxy-listener.js';

export function describeConfig(c: ValidConfig): string {
  const lines: string[] = [];
  const hp = parseHostPort(c.admin.listen, '127.0.0.1');
  const admin = hp === undefined ? c.admin.listen : formatHostPort(hp.host, hp.port);
  const exposed =
    exposureWarning(hp?.host ?? '', c.admin.token) === null ? '' : '; reachable beyond this host: set one';
  lines.push(`admin: http://${admin}/ (token ${c.admin.token ? 'set' : 'not set'}${exposed})`);
  lines.push(
    `workers: ${c.workers === 'auto' ? `auto (${availableParallelism()})` : c.workers}, drain_timeout: ${formatDuration(c.drain_timeout)}, access log: ${c.log.access}`,
  );
  for (const l of c.listeners) {
    const up = 'upstream' in l && l.upstream !== undefined ? ` -> ${String(l.upstream)}` : '';
    const routes =
      (l.protocol === 'http' || l.protocol === 'https') && l.routes.length > 0
        ? ` (${l.routes.map((r) => `${r.match.host ?? '*'}${r.match.path_prefix}${conditions(r)} -> ${routeAnswer(r)}`).join(', ')})`
        : '';
    const http = l.protocol === 'http' || l.protocol === 'https';
    const fin = http && l.client_fin === 'finish' ? ', client_fin: finish' : '';
    const realIp = http && l.real_ip_header !== undefined ? `, client from ${l.real_ip_header}` : '';
    const limit = http && l.rate_limit !== undefined ? `, rate_limit ${rateText(l.rate_limit)}` : '';
    const pp =
      'proxy_protocol' in l && l.proxy_protocol !== undefined
        ? `, PROXY protocol from ${l.proxy_protocol.from.join(' ')}`
        : '';
    const clients = clientLists(l.clients);
    const host = parseHostPort(l.listen)?.host ?? '';
    const warnings =
      l.protocol === 'socks5' || l.protocol === 'http_proxy'
        ? [openProxyWarning(host, l.clients)]
        : http
          ? [realIpWarning(host, l.trusted_proxies, l.real_ip_header), h2HeadWarning(l)]
          : [];
    const warning = warnings.filter((w) => w !== null).join('; ');
    lines.push(
      `listener ${listenerName(l)}: ${l.protocol} ${String(l.listen)}${up}${routes}${fin}${realIp}${limit}${pp}${clients}${warning === '' ? '' : `; ${warning}`}`,
    );
  }
  for (const [name, u] of Object.entries(c.upstreams)) {
    const hc = u.health_check
      ? `, health ${u.health_check.type} every ${formatDuration(u.health_check.interval)}`
      : '';
    const t = u.tls;
    const tls =
      t === undefined
        ? ''
        : `, tls${t.server_name ? ` ${t.server_name}` : ''}${t.verify ? '' : ' NOT VERIFIED'}${t.ca ? ` ca ${t.ca}` : ''}${t.cert ? ' with client certificate' : ''}`;
    const pp = u.send_proxy === 'off' ? '' : `, send_proxy ${u.send_proxy}`;
    const h2 = u.http_version === '2' ? (t === undefined ? ', HTTP/2 (h2c)' : ', HTTP/2') : '';
    lines.push(
      `upstream ${name}: ${u.balance}, ${u.servers.map((s) => (s.backup ? `${s.address} (backup)` : s.address)).join(' ')}${hc}${tls}${h2}${pp}`,
    );
  }
  for (const b of c.shm) {
    lines.push(
      `shm ${b.name}: ${b.segment}, snapshot ${b.snapshot_capacity} B, rings ${b.slots} × ${b.slot_size} B, wake ${b.wake}, http://${b.http}/shm/${b.name}`,
    );
  }
  const relay = c.tunnel?.relay;
  if (relay !== undefined) {
    const tls =
      relay.tls === 'off'
        ? 'plain TCP'
        : relay.tls === 'auto'
          ? `TLS auto (${relay.state_dir})`
          : 'TLS files';
    lines.push(
      `tunnel relay: ${relay.listen}, ${tls}, ${relay.tokens.length} token(s), allow ${relay.allow.length ? relay.allow.join(' ') : '(nothing)'}${relay.proxy_protocol === undefined ? '' : `, PROXY protocol from ${relay.proxy_protocol.from.join(' ')}`}${clientLists(relay.clients)}`,
    );
  }
  const agent = c.tunnel?.agent;
  if (agent !== undefined) {
    const entries = [
      ...agent.forwards.map((f) => `${f.protocol} ${f.listen} -> ${f.to}`),
      ...(agent.socks5 !== undefined ? [`socks5 ${agent.socks5}`] : []),
      ...(agent.http_proxy !== undefined ? [`http_proxy ${agent.http_proxy}`] : []),
    ];
    lines.push(
      `tunnel agent: relays ${agent.relays.map((r) => r.address).join(' ')}, compression ${agent.compression}; ${entries.join(', ') || 'no entries'}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** What a route does: its upstream, or the answer zipline gives itself. */
function routeAnswer(r: HttpRouteConfig): string {
  const extra = [
    ...(r.rate_limit === undefined
      ? []
      : [r.rate_limit === 'off' ? 'no rate_limit' : `rate_limit ${rateText(r.rate_limit)}`]),
    ...(r.clients === undefined ? [] : [clientLists(r.clients).slice(2)]),
    ...Object.entries(r.timeouts ?? {}).map(([k, ms]) =>
      ms === undefined ? '' : `${k} ${ms === 0 ? 'off' : formatDuration(ms)}`,
    ),
  ].filter((x) => x !== '');
  const more = extra.length > 0 ? ` (${extra.join(', ')})` : '';
  if (r.redirect !== undefined) return `redirect ${r.redirect.status} ${r.redirect.to}${more}`;
  if (r.respond !== undefined) return `respond ${r.respond.status}${more}`;
  return `${r.upstream ?? ''}${more}`;
}

/** A rate limit as `20/s burst 40 by client_ip`. */
function rateText(rl: { rate: number; burst?: number | undefined; key: string }): string {
  const burst = rl.burst ?? Math.max(1, Math.ceil(rl.rate));
  return `${Number(rl.rate.toFixed(4))}/s burst ${burst} by ${rl.key}`;
}

/** A route's `match.methods` and `match.headers`, as ` [GET HEAD, X-Canary: 1]`. */
function conditions(r: HttpRouteConfig): string {
  const parts = [
    ...(r.match.methods !== undefined ? [r.match.methods.join(' ')] : []),
    ...Object.entries(r.match.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
  ];
  return parts.length > 0 ? ` [${parts.join(', ')}]` : '';
}

/** `clients` lists as `, clients allow A B deny C` (nothing when unset or empty). */
function clientLists(cl: { allow: string[]; deny: string[] } | undefined): string {
  if (cl === undefined || (cl.allow.length === 0 && cl.deny.length === 0)) return '';
  const allow = cl.allow.length > 0 ? ` allow ${cl.allow.join(' ')}` : '';
  return `, clients${allow}${cl.deny.length > 0 ? ` deny ${cl.deny.join(' ')}` : ''}`;
}
