/**
 * What a client side (`Downstream`) and the listener see of one proxied request, whichever
 * protocol the upstream speaks: `Exchange` (HTTP/1.1 over pooled connections) or `H2Exchange`
 * (a stream on an HTTP/2 session, `upstreams.*.http_version: 2`). `createExchange` picks by
 * the upstream.
 */
import type { OutgoingHttpHeaders } from 'node:http2';
import type { ErrorCode } from '../errors.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { Upstream } from '../upstream/upstream.js';
import type { BodySink } from './client-body.js';
import type { Downstream } from './downstream.js';
import { Exchange } from './exchange.js';
import type { ExchangeHost } from './exchange-host.js';
import { H2Exchange } from './h2-upstream/exchange.js';
import type { RequestHead } from './parser/request-head.js';
import type { RouteMatch } from './route-table.js';
import type { CompiledRoute } from './settings.js';

export interface ProxyExchange extends BodySink {
  /** Where it stands (`picking`, `connecting`, `waiting`, `streaming`, `done`…). */
  readonly state: string;
  /** `performance.now()` when it began. */
  readonly startedAt: number;
  readonly requestId: string;
  /** The error that ended it, if any. */
  readonly code: ErrorCode | null;
  /** Status sent (or to be sent) to the client; 0 until known. */
  readonly status: number;
  readonly clientIp: string;
  /** Response body bytes sent to the client. */
  readonly bytesOut: number;
  /** Response body bytes that went through the native splice pump. */
  readonly splicedBytes: number;
  /** The client has the response head: no retry, and failures abort the client. */
  readonly headSent: boolean;
  readonly head: RequestHead;
  readonly down: Downstream;
  readonly upstream: Upstream;
  readonly route: CompiledRoute;
  readonly attempts: number;
  readonly endpoint: Endpoint | null;
  /** Request body bytes received from the client. */
  readonly bodyBytes: number;
  /** The request body was fully received. */
  readonly bodyDone: boolean;
  /**
   * The response may end with trailer fields (an HTTP/2 upstream): an HTTP/2 client's response
   * then waits for `trailers` before its stream ends.
   */
  readonly trailersExpected?: boolean;
  /** The response's trailer fields, once they arrived (null: none). */
  readonly trailers?: OutgoingHttpHeaders | null;
  start(): void;
  bodyEnd(): void;
  fail(code: ErrorCode): void;
  /** The client went away (499), or zipline closed its connection (`ZL_DRAIN_TIMEOUT`). */
  clientGone(code?: ErrorCode): void;
  onClientDrain(): void;
  tick(now: number, clientIdleMs: number): void;
}

export function createExchange(
  host: ExchangeHost,
  down: Downstream,
  head: RequestHead,
  match: RouteMatch<CompiledRoute>,
  upstream: Upstream,
): ProxyExchange {
  return upstream.settings.http2
    ? new H2Exchange(host, down, head, match, upstream)
    : new Exchange(host, down, head, match, upstream);
}
