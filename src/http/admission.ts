/**
 * What a request must pass before an exchange starts, the same for HTTP/1.1 and HTTP/2: a path
 * that stays under the root (400; `request-path.ts` normalises it), a route
 * whose upstream exists (404) and whose conditions it meets, a client the route's `clients` allow
 * (403), a declared body within the route's `max_body` (413), and room in the route's rate limit
 * (429, `Retry-After` from `lastRetryAfter()`). The caller answers a
 * refusal itself (its own framing) and logs it with `localError`.
 */
import type { ErrorCode } from '../errors.js';
import { clientAllowed } from '../l4/client-access.js';
import type { Upstream } from '../upstream/upstream.js';
import type { RequestHead } from './parser/request-head.js';
import { latin1, nameIs } from './parser/tokens.js';
import { admitted } from './rate-limit.js';
import { requestClientIp } from './real-ip.js';
import { requestPath } from './request-path.js';
import type { RouteMatch } from './route-table.js';
import type { CompiledRoute, HttpListenerSettings } from './settings.js';

/** An admitted request's route. */
export type Routed = RouteMatch<CompiledRoute>;

export interface AdmissionHost {
  readonly settings: HttpListenerSettings;
  upstream(name: string): Upstream | undefined;
}

/**
 * The request's route (its upstream is `host.upstream(route.upstream)`, unless zipline answers it
 * itself: `route.local`), or why it is refused.
 */
export function admitRequest(
  host: AdmissionHost,
  head: RequestHead,
  down: { readonly clientIp: string; readonly trusted: boolean },
): Routed | ErrorCode {
  const path = requestPath(head.target, host.settings.mergeSlashes);
  if (path === null) return 'ZL_HTTP_BAD_REQUEST'; // `..` above the root
  const match = host.settings.routes.match(head.host, path, head, routeApplies);
  if (match === null) return 'ZL_HTTP_NO_ROUTE';
  const route = match.route.value;
  if (route.local === null && host.upstream(route.upstream) === undefined) return 'ZL_HTTP_NO_ROUTE';
  const limit = route.rateLimit;
  if (route.clients === null && limit === null) {
    return head.contentLength > route.maxBody ? 'ZL_HTTP_BODY_TOO_LARGE' : match; // its body is not read
  }
  const s = host.settings;
  const client = requestClientIp(s.realIpHeader, s.trusted, head, down);
  if (!clientAllowed(route.clients, client)) return 'ZL_CLIENT_DENIED';
  if (head.contentLength > route.maxBody) return 'ZL_HTTP_BODY_TOO_LARGE';
  if (limit !== null && !admitted(limit, head, client)) return 'ZL_HTTP_RATE_LIMITED';
  return match;
}

/** A conditional route's `match.methods` and `match.headers` against the request. */
function routeApplies(route: CompiledRoute, head: RequestHead): boolean {
  if (route.methods !== null && !route.methods.has(head.method)) return false;
  if (route.headers === null) return true;
  for (const [name, want] of route.headers) {
    let found = false;
    for (let f = 0; f < head.fieldCount && !found; f++) {
      const k = f * 4;
      if (!nameIs(head.raw, head.fields[k] as number, head.fields[k + 1] as number, name)) continue;
      found =
        want === '*' || latin1(head.raw, head.fields[k + 2] as number, head.fields[k + 3] as number) === want;
    }
    if (!found) return false;
  }
  return true;
}
