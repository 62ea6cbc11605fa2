/**
 * The compiled route table of an HTTP listener: built once from config, then each request is one
 * host lookup and a scan of that host's routes, longest path prefix first.
 *
 * Host matching: exact names first, then wildcards (`*.example.com` matches `a.example.com` and
 * `a.b.example.com`, not `example.com`; the longest suffix wins), then routes without a host.
 * Within a host, the longest `path_prefix` that is a plain string prefix of the path wins (as an
 * nginx prefix `location`); when none of a host's routes match, the routes without a host are
 * tried. Host names compare case-insensitively and without the port. A route with conditions
 * (`match.headers`, `match.methods`: `conditional`) is tried before the unconditional ones of the
 * same prefix length, and only taken when the caller's `test` accepts it.
 */

export interface RouteSpec<T> {
  readonly host?: string | undefined;
  readonly pathPrefix?: string | undefined;
  readonly stripPrefix?: boolean | undefined;
  /** The route has conditions beyond host and path (checked by `match`'s `test`). */
  readonly conditional?: boolean | undefined;
  readonly value: T;
}

export interface Route<T> {
  readonly host: string | null;
  readonly pathPrefix: string;
  readonly stripPrefix: boolean;
  readonly conditional: boolean;
  readonly value: T;
}

/** Whether a conditional route's `value` applies to the request `ctx` (a static function: no closure per request). */
export type RouteTest<T, C> = (value: T, ctx: C) => boolean;

export interface RouteMatch<T> {
  readonly route: Route<T>;
  /** The path to send upstream (`strip_prefix` applied; always starts with `/`). */
  readonly path: string;
}

export class RouteTable<T> {
  private readonly exact = new Map<string, Route<T>[]>();
  /** [suffix including the dot, routes], longest suffix first. */
  private readonly wildcards: [string, Route<T>[]][] = [];
  private readonly any: Route<T>[] = [];

  constructor(specs: readonly RouteSpec<T>[]) {
    const wild = new Map<string, Route<T>[]>();
    for (const s of specs) {
      const route: Route<T> = {
        host: s.host === undefined ? null : withoutRootDot(s.host.toLowerCase()),
        pathPrefix: s.pathPrefix ?? '/',
        stripPrefix: s.stripPrefix ?? false,
        conditional: s.conditional ?? false,
        value: s.value,
      };
      if (route.host === null) this.any.push(route);
      else if (route.host.startsWith('*.')) push(wild, route.host.slice(1), route);
      else push(this.exact, route.host, route);
    }
    for (const list of [...this.exact.values(), ...wild.values(), this.any]) {
      // longest prefix first; at one length, conditional routes first (a stable sort keeps config order)
      list.sort(
        (a, b) => b.pathPrefix.length - a.pathPrefix.length || Number(b.conditional) - Number(a.conditional),
      );
    }
    this.wildcards.push(...[...wild.entries()].sort((a, b) => b[0].length - a[0].length));
  }

  /**
   * The route for `host` (the Host header, port allowed) and `path` (origin-form, query kept:
   * `requestPath`'s); a conditional route only if `test(route.value, ctx)` holds.
   */
  match<C>(hostHeader: string | null, path: string, ctx?: C, test?: RouteTest<T, C>): RouteMatch<T> | null {
    const host = hostHeader === null ? '' : withoutRootDot(stripPort(hostHeader).toLowerCase());
    const byHost = this.exact.get(host) ?? this.wildcardFor(host);
    return (byHost === undefined ? null : pick(byHost, path, ctx, test)) ?? pick(this.any, path, ctx, test);
  }

  private wildcardFor(host: string): Route<T>[] | undefined {
    for (const [suffix, routes] of this.wildcards) {
      if (host.length > suffix.length && host.endsWith(suffix)) return routes;
    }
    return undefined;
  }
}

function push<T>(map: Map<string, Route<T>[]>, key: string, route: Route<T>): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [route]);
  else list.push(route);
}

function pick<T, C>(
  routes: readonly Route<T>[],
  path: string,
  ctx: C | undefined,
  test: RouteTest<T, C> | undefined,
): RouteMatch<T> | null {
  for (const route of routes) {
    if (!path.startsWith(route.pathPrefix)) continue;
    if (route.conditional && (test === undefined || !test(route.value, ctx as C))) continue;
    if (!route.stripPrefix) return { route, path };
    const rest = path.slice(route.pathPrefix.length);
    return { route, path: rest.startsWith('/') ? rest : `/${rest}` };
  }
  return null;
}

/** `example.com.` (a fully qualified name) is `example.com`, as nginx and DNS treat it. */
function withoutRootDot(host: string): string {
  return host.length > 1 && host.charCodeAt(host.length - 1) === 0x2e ? host.slice(0, -1) : host;
}

/** `host:port` → `host`; `[::1]:80` → `[::1]`. */
export function stripPort(host: string): string {
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    return end < 0 ? host : host.slice(0, end + 1);
  }
  const colon = host.lastIndexOf(':');
  return colon < 0 ? host : host.slice(0, colon);
}

/**
 * The path of a request target, with the query kept: origin-form as is; absolute-form
 * (`http://h/p?q`) reduced to its path; `*` (OPTIONS) as is.
 */
export function pathOf(target: string): string {
  if (target.startsWith('/') || target === '*') return target;
  const scheme = target.indexOf('://');
  if (scheme < 0) return target;
  const slash = target.indexOf('/', scheme + 3);
  const query = target.indexOf('?', scheme + 3);
  if (slash < 0) return query < 0 ? '/' : `/${target.slice(query)}`;
  return query >= 0 && query < slash ? `/${target.slice(query)}` : target.slice(slash);
}
