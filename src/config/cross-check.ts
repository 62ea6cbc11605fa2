/**
 * Checks that span several keys. They run on the interpolated raw data (not the schema output)
 * so that they are reported together with schema problems in one pass; each check is defensive
 * about types because the schema may have rejected the same value.
 */
import { isIP } from 'node:net';
import type { PathSegment } from './load.js';
import { CONFIG_REFERENCE } from './reference.js';
import { formatHostPort, normalizeListen, parseDuration, parseHostPort } from './units.js';

type Report = (path: readonly PathSegment[], message: string) => void;

function obj(v: unknown): Record<string, unknown> | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

function dur(v: unknown): number | undefined {
  return typeof v === 'string' ? parseDuration(v) : undefined;
}

export function crossCheck(data: unknown, report: Report): void {
  const root = obj(data);
  if (root === undefined) return;
  const upstreams = obj(root.upstreams) ?? {};
  checkUpstreams(upstreams, report);
  const binds = checkListeners(root.listeners, upstreams, report);
  claimAdmin(obj(root.admin), binds, report);
  checkShm(root.shm, binds, report);
  checkTunnel(obj(root.tunnel), binds, report);
  if (root.workers !== undefined && root.workers !== 1 && process.platform !== 'linux') {
    report(
      ['workers'],
      `workers > 1 needs SO_REUSEPORT load balancing, which zipline supports on Linux only (this is ${process.platform}); use 1`,
    );
  }
}

function checkUpstreams(upstreams: Record<string, unknown>, report: Report): void {
  for (const [name, u] of Object.entries(upstreams)) {
    const up = obj(u);
    if (up === undefined) continue;
    const hc = obj(up.health_check);
    if (hc !== undefined && hc.service !== undefined && hc.type !== 'grpc') {
      report(['upstreams', name, 'health_check', 'service'], '`service` is for `type: grpc` checks');
    }
    if (hc !== undefined && hc.type === 'http' && (up.http_version === 2 || up.http_version === '2')) {
      report(
        ['upstreams', name, 'health_check', 'type'],
        'an `http` health check speaks HTTP/1.1, which an `http_version: 2` server may not: use `type: tcp`, or `grpc` for a gRPC server',
      );
    }
    if (hc !== undefined) {
      // an unset timeout follows the interval (upstream/settings.ts): only a given one can clash
      const interval = dur(hc.interval ?? '5s');
      const timeout = hc.timeout === undefined ? undefined : dur(hc.timeout);
      if (interval !== undefined && timeout !== undefined && timeout >= interval) {
        report(['upstreams', name, 'health_check', 'timeout'], `timeout must be shorter than interval`);
      }
    }
    const backoff = obj(obj(up.retry)?.backoff);
    if (backoff !== undefined) {
      // an unset max follows the base (upstream/settings.ts): only a given one can clash
      const base = dur(backoff.base ?? '25ms');
      const max = backoff.max === undefined ? undefined : dur(backoff.max);
      if (base !== undefined && max !== undefined && base > max) {
        report(['upstreams', name, 'retry', 'backoff', 'base'], 'base must not exceed max');
      }
    }
    if (Array.isArray(up.servers)) {
      const seen = new Set<string>();
      up.servers.forEach((s, i) => {
        const addr = typeof s === 'string' ? s : obj(s)?.address;
        if (typeof addr !== 'string') return;
        if (seen.has(addr)) report(['upstreams', name, 'servers', i], `duplicate server ${addr}`);
        seen.add(addr);
      });
    }
  }
}

/** `send_proxy: v1|v2` on an upstream. */
function sendsProxy(up: Record<string, unknown> | undefined): boolean {
  return up?.send_proxy === 'v1' || up?.send_proxy === 'v2';
}

/** Bound ports (`tcp/port`, `udp/port`) → the hosts on them and where each was declared. */
type Binds = Map<string, { host: string; where: string }[]>;

/**
 * Two hosts on one port collide when they are the same, or when one is a wildcard that takes the
 * port on every address of the other's family: `0.0.0.0` every IPv4 address (and a name, which
 * may be one), `::` every address (Node binds it dual-stack).
 */
function overlaps(a: string, b: string): boolean {
  if (a === b || a === '::' || b === '::') return true;
  if (a === '0.0.0.0') return isIP(b) !== 6;
  return b === '0.0.0.0' && isIP(a) !== 6;
}

function claim(
  binds: Binds,
  family: 'tcp' | 'udp',
  listen: unknown,
  where: string,
  path: readonly PathSegment[],
  report: Report,
  note = '',
): void {
  const text = normalizeListen(listen);
  if (typeof text !== 'string') return;
  const hp = parseHostPort(text);
  if (hp === undefined || hp.port === 0) return;
  const key = `${family}/${hp.port}`;
  const taken = binds.get(key) ?? [];
  const other = taken.find((t) => overlaps(t.host, hp.host));
  if (other === undefined) {
    taken.push({ host: hp.host, where });
    binds.set(key, taken);
  } else if (other.host === hp.host) report(path, `address already used by ${other.where}${note}`);
  else {
    report(
      path,
      `address overlaps ${other.where} (${formatHostPort(other.host, hp.port)}): a wildcard address takes its port on every address${note}`,
    );
  }
}

/**
 * The admin server's address (its default when not given: it always runs) against the rest: a
 * listener on 127.0.0.1:9901 would otherwise pass `check` and fail at start with EADDRINUSE, as
 * if another process held the port.
 */
function claimAdmin(admin: Record<string, unknown> | undefined, binds: Binds, report: Report): void {
  const given = admin?.listen;
  const v = given ?? CONFIG_REFERENCE['admin.listen'].default;
  // a bare port is on loopback for the admin server (schema.ts)
  const bare = typeof v === 'number' || (typeof v === 'string' && /^:?\d{1,5}$/.test(v));
  const listen = bare ? `127.0.0.1:${String(v).replace(':', '')}` : v;
  const note = given === undefined ? ` (${String(v)} is the admin server's default: set admin.listen)` : '';
  claim(binds, 'tcp', listen, 'admin.listen', ['admin', 'listen'], report, note);
}

function checkListeners(listeners: unknown, upstreams: Record<string, unknown>, report: Report): Binds {
  const binds: Binds = new Map();
  if (!Array.isArray(listeners)) return binds;
  const names = new Map<string, number>();
  listeners.forEach((l, i) => {
    const listener = obj(l);
    if (listener === undefined) return;
    const protocol = listener.protocol;
    if (typeof listener.upstream === 'string' && !(listener.upstream in upstreams)) {
      const known = Object.keys(upstreams);
      report(
        ['listeners', i, 'upstream'],
        `upstream "${listener.upstream}" is not defined${known.length ? ` (defined: ${known.join(', ')})` : ''}`,
      );
    }
    if (
      protocol !== 'tcp' &&
      typeof listener.upstream === 'string' &&
      sendsProxy(obj(upstreams[listener.upstream]))
    ) {
      report(
        ['listeners', i, 'upstream'],
        `upstream "${listener.upstream}" has \`send_proxy\`, which is for tcp listeners only${protocol === 'http' || protocol === 'https' ? ' (pooled HTTP connections carry many clients; X-Forwarded-For names each)' : ''}`,
      );
    }
    if (protocol === 'http' || protocol === 'https') checkHttpListener(listener, i, upstreams, report);
    else if (protocol === 'udp' && typeof listener.upstream === 'string') {
      const tls = obj(upstreams[listener.upstream])?.tls;
      if (tls !== undefined && tls !== false) {
        report(
          ['listeners', i, 'upstream'],
          `upstream "${listener.upstream}" has \`tls\`, which a udp listener cannot speak (no DTLS): use an upstream without it`,
        );
      }
    }
    const listen = normalizeListen(listener.listen);
    const name = typeof listener.name === 'string' ? listener.name : `${String(protocol)}:${String(listen)}`;
    const prev = names.get(name);
    if (prev !== undefined)
      report(['listeners', i, 'name'], `duplicate listener name "${name}" (also listeners[${prev}])`);
    names.set(name, i);
    claim(
      binds,
      protocol === 'udp' ? 'udp' : 'tcp',
      listen,
      `listeners[${i}]`,
      ['listeners', i, 'listen'],
      report,
    );
  });
  return binds;
}

function checkTunnel(tunnel: Record<string, unknown> | undefined, binds: Binds, report: Report): void {
  if (tunnel === undefined) return;
  const relay = obj(tunnel.relay);
  if (relay !== undefined) {
    claim(binds, 'tcp', relay.listen, 'tunnel.relay.listen', ['tunnel', 'relay', 'listen'], report);
  }
  const agent = obj(tunnel.agent);
  if (agent === undefined) return;
  for (const key of ['socks5', 'http_proxy'] as const) {
    claim(binds, 'tcp', agent[key], `tunnel.agent.${key}`, ['tunnel', 'agent', key], report);
  }
  if (Array.isArray(agent.forwards)) {
    agent.forwards.forEach((f, i) => {
      const fw = obj(f);
      if (fw === undefined) return;
      const family = fw.protocol === 'udp' ? 'udp' : 'tcp';
      claim(
        binds,
        family,
        fw.listen,
        `tunnel.agent.forwards[${i}]`,
        ['tunnel', 'agent', 'forwards', i, 'listen'],
        report,
      );
    });
  }
  if (Array.isArray(agent.relays)) {
    agent.relays.forEach((r, i) => {
      const ref = obj(r);
      if (ref !== undefined && ref.fingerprint !== undefined && ref.ca !== undefined) {
        report(['tunnel', 'agent', 'relays', i], 'use `fingerprint` or `ca`, not both');
      }
      if (ref !== undefined && ref.tls === false && (ref.fingerprint !== undefined || ref.ca !== undefined)) {
        report(['tunnel', 'agent', 'relays', i], '`fingerprint`/`ca` need `tls: true`');
      }
    });
  }
}

function checkHttpListener(
  listener: Record<string, unknown>,
  i: number,
  upstreams: Record<string, unknown>,
  report: Report,
): void {
  const routes = Array.isArray(listener.routes) ? listener.routes : [];
  if (routes.length === 0 && listener.upstream === undefined) {
    report(['listeners', i], 'an http listener needs `routes` or an `upstream`');
  }
  if (
    listener.real_ip_header !== undefined &&
    !(Array.isArray(listener.trusted_proxies) && listener.trusted_proxies.length > 0)
  ) {
    report(['listeners', i, 'real_ip_header'], 'needs `trusted_proxies`: the peers whose header is believed');
  }
  const seen = new Map<string, number>();
  routes.forEach((r, j) => {
    const route = obj(r);
    if (route === undefined) return;
    const answers = ['upstream', 'redirect', 'respond'].filter((k) => route[k] !== undefined);
    if (answers.length !== 1) {
      report(
        ['listeners', i, 'routes', j],
        answers.length === 0
          ? 'a route needs an `upstream`, a `redirect` or a `respond`'
          : `a route has one of \`upstream\`, \`redirect\`, \`respond\`, not ${answers.map((a) => `\`${a}\``).join(' and ')}`,
      );
    }
    if (typeof route.upstream === 'string' && sendsProxy(obj(upstreams[route.upstream]))) {
      report(
        ['listeners', i, 'routes', j, 'upstream'],
        `upstream "${route.upstream}" has \`send_proxy\`, which is for tcp listeners only (pooled HTTP connections carry many clients; X-Forwarded-For names each)`,
      );
    }
    if (typeof route.upstream === 'string' && !(route.upstream in upstreams)) {
      const known = Object.keys(upstreams);
      report(
        ['listeners', i, 'routes', j, 'upstream'],
        `upstream "${route.upstream}" is not defined${known.length ? ` (defined: ${known.join(', ')})` : ''}`,
      );
    }
    const match = obj(route.match) ?? {};
    const conditions = JSON.stringify([match.methods ?? null, obj(match.headers) ?? null]);
    const key = `${String(match.host ?? '').toLowerCase()} ${String(match.path_prefix ?? '/')} ${conditions}`;
    const prev = seen.get(key);
    if (prev !== undefined) report(['listeners', i, 'routes', j, 'match'], `same match as routes[${prev}]`);
    seen.set(key, j);
  });
  const tls = obj(listener.tls);
  if (listener.protocol === 'https') {
    const certs = Array.isArray(tls?.certificates) ? tls.certificates : [];
    if (tls === undefined || (tls.cert === undefined && certs.length === 0)) {
      report(
        ['listeners', i, 'tls'],
        'an https listener needs `tls.cert` and `tls.key` (or `tls.certificates`)',
      );
    }
    if (listener.h2c !== undefined) {
      report(['listeners', i, 'h2c'], '`h2c` is for `protocol: http`; https offers h2 by `tls.alpn`');
    }
  } else if (tls !== undefined) {
    report(['listeners', i, 'tls'], '`tls` is for `protocol: https`');
  }
  if (tls !== undefined && (tls.cert === undefined) !== (tls.key === undefined)) {
    report(['listeners', i, 'tls'], '`tls.cert` and `tls.key` go together');
  }
}

function checkShm(bridges: unknown, binds: Binds, report: Report): void {
  if (!Array.isArray(bridges)) return;
  const names = new Map<string, number>();
  const segments = new Map<string, number>();
  const servers = new Set<unknown>();
  bridges.forEach((b, i) => {
    const bridge = obj(b);
    if (bridge === undefined) return;
    // bridges with the same `http` share one server; it must not take a listener's or admin's address
    const http = bridge.http ?? CONFIG_REFERENCE['shm[].http'].default;
    if (!servers.has(http)) {
      servers.add(http);
      claim(binds, 'tcp', http, `shm[${i}].http`, ['shm', i, 'http'], report);
    }
    for (const [key, seen] of [
      ['name', names],
      ['segment', segments],
    ] as const) {
      const v = bridge[key];
      if (typeof v !== 'string') continue;
      const prev = seen.get(v);
      if (prev !== undefined) report(['shm', i, key], `duplicate ${key} "${v}" (also shm[${prev}])`);
      seen.set(v, i);
    }
  });
}
