/**
 * What an http/https listener records of each request it answered: the status-class counts of
 * `/stats`, `zipline_request_duration_seconds` (per route and status class), the access line,
 * and `zipline_http_errors_total` for zipline's own error answers.
 */
import { ERROR_CATALOG, type ErrorCode } from '../errors.js';
import { isoNow, jsonNumber, jsonString } from '../log/access-line.js';
import type { AccessLog } from '../log/logger.js';
import { metrics } from '../metrics/catalog.js';
import { F, fieldName } from './parser/names.js';
import type { RequestHead } from './parser/request-head.js';
import { latin1 } from './parser/tokens.js';
import type { ProxyExchange } from './proxy-exchange.js';
import { pathOf } from './route-table.js';
import type { CompiledRoute } from './settings.js';

const CODE_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;

type Observer = { observe(v: number): void };

/** The client side of a request zipline answered itself. */
export interface LocalPeer {
  readonly clientIp: string;
  readonly clientPort: number;
  readonly httpVersion?: '2' | null;
  /** The peer is in `trusted_proxies` (then `real_ip_header` may name the client). */
  readonly trusted?: boolean;
}

export class RequestLog {
  /** `name` as a JSON string, for the access log. */
  private readonly nameJson: string;
  /**
   * `zipline_request_duration_seconds` children (labels() is not free), per compiled route by
   * identity and per status class (index: status / 100 - 1): no key string built per request.
   */
  private readonly durations = new WeakMap<CompiledRoute, (Observer | undefined)[]>();
  /** Requests answered, by status class (1xx…5xx; 499 and zipline's own answers included), for /stats. */
  private readonly answered = [0, 0, 0, 0, 0];

  constructor(
    private readonly name: string,
    private readonly protocol: 'http' | 'https',
    private readonly accessLog: () => AccessLog,
  ) {
    this.nameJson = jsonString(name);
  }

  /** `/stats`' `requests`: the total and each status class. */
  counts(): Record<string, number> {
    return {
      total: this.answered.reduce((a, n) => a + n, 0),
      ...Object.fromEntries(CODE_CLASSES.map((c, i) => [c, this.answered[i] as number])),
    };
  }

  /** A proxied request ended (response complete, failed, or the client gone). */
  exchange(ex: ProxyExchange): void {
    const seconds = (performance.now() - ex.startedAt) / 1000;
    const cls = classOf(ex.status);
    (this.answered[cls] as number)++;
    const route = ex.route;
    let series = this.durations.get(route);
    if (series === undefined) {
      series = [];
      this.durations.set(route, series);
    }
    let obs = series[cls];
    if (obs === undefined) {
      obs = metrics.requestDuration.labels(
        this.name,
        route.name,
        route.upstream,
        CODE_CLASSES[cls] as string,
      );
      series[cls] = obs;
    }
    obs.observe(seconds);
    if (ex.code !== null) metrics.httpErrors.labels(this.name, ex.code).inc();
    const log = this.accessLog();
    if (!log.enabled) return;
    const head = ex.head;
    const addr = ex.endpoint?.address ?? null;
    readAgentAndReferer(head);
    // docs/HTTP.md's access-log fields, in `local`'s order, as JSON.stringify would write them
    // (built by hand: src/log/access-line.ts)
    log.writeLine(
      `{"time":"${isoNow()}","listener":${this.nameJson},"protocol":"${this.protocol}",` +
        `"client_ip":${jsonString(ex.clientIp)},"client_port":${ex.down.clientPort},` +
        `"method":${jsonString(head.method)},"host":${jsonString(head.host)},"path":${jsonString(logPath(head))},` +
        `"http_version":${jsonString(httpVersion(ex.down, head))},"status":${ex.status},` +
        `"route":${jsonString(route.name)},"upstream":${jsonString(route.upstream)},` +
        `"upstream_addr":${jsonString(addr)},"attempts":${ex.attempts},` +
        `"response_time":${jsonNumber(Math.round(seconds * 1e6) / 1e6)},` +
        `"bytes_in":${ex.bodyBytes},"bytes_out":${ex.bytesOut},"data_path":"${ex.splicedBytes > 0 ? 'native' : 'js'}",` +
        `"request_id":${jsonString(ex.requestId)},"user_agent":${jsonString(userAgent)},` +
        `"referer":${jsonString(referer)},"error":${jsonString(ex.code)}}\n`,
    );
  }

  /**
   * A request zipline answered itself: an error (parse error, no route, header timeout, rate
   * limit: `code`), or a route's `redirect`/`respond` (`code` null, `status` and `route` given).
   * `seconds`: since the head's first byte, for a head that came in more than one read (0 else).
   */
  local(
    peer: LocalPeer,
    head: RequestHead | null,
    code: ErrorCode | null,
    status = code === null ? 200 : ERROR_CATALOG[code].status || 500,
    route: string | null = null,
    bytesOut = 0,
    seconds = 0,
  ): void {
    if (code !== null) metrics.httpErrors.labels(this.name, code).inc();
    (this.answered[classOf(status)] as number)++;
    const log = this.accessLog();
    if (!log.enabled) return;
    readAgentAndReferer(head);
    log.write({
      time: isoNow(),
      listener: this.name,
      protocol: this.protocol,
      client_ip: peer.clientIp,
      client_port: peer.clientPort,
      method: head?.method ?? null,
      host: head?.host ?? null,
      path: head === null ? null : logPath(head),
      http_version: httpVersion(peer, head),
      status,
      route,
      upstream: null,
      upstream_addr: null,
      attempts: 0,
      response_time: seconds,
      bytes_in: 0,
      bytes_out: bytesOut,
      data_path: null,
      request_id: null,
      user_agent: userAgent,
      referer,
      error: code,
    });
  }
}

/** The access line's `user_agent` and `referer`, as `readAgentAndReferer` last found them. */
let userAgent: string | null = null;
let referer: string | null = null;

/** The first User-Agent and Referer values of `head` (null when absent), in one pass over its fields. */
function readAgentAndReferer(head: RequestHead | null): void {
  userAgent = null;
  referer = null;
  if (head === null) return;
  const { raw, fields } = head;
  for (let f = 0; f < head.fieldCount; f++) {
    const k = f * 4;
    const id = fieldName(raw, fields[k] as number, fields[k + 1] as number);
    if (id === F.USER_AGENT) userAgent ??= latin1(raw, fields[k + 2] as number, fields[k + 3] as number);
    else if (id === F.REFERER) referer ??= latin1(raw, fields[k + 2] as number, fields[k + 3] as number);
  }
}

/** Index of a status's class (1xx…5xx); anything else counts as 5xx. */
function classOf(status: number): number {
  const c = Math.floor(status / 100) - 1;
  return c >= 0 && c < 5 ? c : 4;
}

/** The access log's `http_version`: `2`, `1.1` or `1.0` (null before a head was read). */
function httpVersion(down: { httpVersion?: '2' | null }, head: RequestHead | null): string | null {
  if (down.httpVersion === '2') return '2';
  return head === null ? null : head.minor === 1 ? '1.1' : '1.0';
}

/** The access log's `path`: the target's path and query (an absolute-form's authority is `host`), as nginx's `$request_uri`. */
function logPath(head: RequestHead): string {
  return head.absoluteForm ? pathOf(head.target) : head.target;
}
