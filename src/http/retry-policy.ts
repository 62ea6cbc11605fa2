/**
 * What may be tried again and where (docs/HTTP.md "Retries"): the kinds of failure, the safety
 * of repeating a request, `Retry-After` on a 503, the status → code mapping of retried
 * responses, and the `balance: hash` key of a request.
 */
import { hash32 } from '../balancer/hash-fn.js';
import type { ErrorCode } from '../errors.js';
import { metrics } from '../metrics/catalog.js';
import type { Endpoint } from '../upstream/endpoint.js';
import type { UpstreamSettings } from '../upstream/settings.js';
import type { Upstream } from '../upstream/upstream.js';
import { F, fieldName } from './parser/names.js';
import { cookieValue, headerValue, type RequestHead } from './parser/request-head.js';
import type { ResponseHead } from './parser/response-head.js';
import { latin1 } from './parser/tokens.js';

/** How an attempt failed: before connecting, the connection died, a timeout, a retryable status. */
export type FailureKind = 'connect' | 'reset' | 'timeout' | 'status';

/** RFC 9110 §9.2.2 idempotent methods. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
/** A Retry-After longer than this is capped when taking a server out of rotation. */
const MAX_RETRY_AFTER_MS = 300_000;

/** Safe to repeat once it may have reached a server: idempotent, or with an `Idempotency-Key`. */
export function safeToRepeat(head: RequestHead): boolean {
  return IDEMPOTENT.has(head.method) || head.idempotencyKey;
}

/** `retry.on` covers this kind of failure (statuses are checked against the set by the caller). */
export function retryOn(kind: FailureKind, s: UpstreamSettings): boolean {
  if (kind === 'connect') return s.retryOnConnectFailure;
  if (kind === 'reset') return s.retryOnReset;
  if (kind === 'timeout') return s.retryOnTimeout;
  return true;
}

/** Where an exchange stands, for `mayRetry`. */
export interface RetryState {
  /** Response bytes reached the client. */
  readonly headSent: boolean;
  /** Attempts made so far. */
  readonly attempts: number;
  /** The exchange already counts in the upstream's retries in flight. */
  readonly retrying: boolean;
  /** Safe to repeat (`safeToRepeat`) with its body still at hand. */
  readonly replayable: boolean;
  /** Part of the request body was sent and not kept (too large to replay). */
  readonly bodyLost: boolean;
}

/** `retry.on`, attempts left, safe to repeat with its body at hand, and the retry budget. */
export function mayRetry(up: Upstream, kind: FailureKind, x: RetryState): boolean {
  const s = up.settings;
  if (x.headSent || x.attempts > s.retryAttempts || !retryOn(kind, s)) return false;
  // after a connect failure nothing was sent: every method may go elsewhere
  if (kind !== 'connect' && !x.replayable) return false;
  if (x.bodyLost) return false;
  if (!x.retrying && !up.retryAllowed()) {
    metrics.retriesRefused.labels(up.name).inc();
    return false;
  }
  return true;
}

/** The code of a retried response status when no retry is left and zipline answers itself. */
export function codeForStatus(status: number): ErrorCode {
  if (status === 503) return 'ZL_UPSTREAM_UNAVAILABLE';
  if (status === 504) return 'ZL_UPSTREAM_RESPONSE_TIMEOUT';
  return 'ZL_UPSTREAM_BAD_RESPONSE';
}

/** `balance: hash` key of this request: client address, path, a header or a cookie (`hash_key`). */
export function requestHash(up: Upstream, clientHash: number, head: RequestHead, path: string): number {
  if (up.settings.policy !== 'hash') return clientHash;
  const key = up.settings.hashKey;
  if (key === 'path') return hash32(path);
  // a request without the header or cookie: by its client IP (HAProxy falls back to round robin)
  const value = key.startsWith('header:')
    ? headerValue(head, key.slice(7).toLowerCase())
    : key.startsWith('cookie:')
      ? cookieValue(head, key.slice(7))
      : undefined;
  return value === undefined ? clientHash : hash32(value);
}

/**
 * `Retry-After` on a 503 (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, in milliseconds from
 * `now` (at most 5 minutes); 0 when absent or malformed.
 */
export function retryAfterMs(value: string | undefined, now: number): number {
  if (value === undefined) return 0;
  const v = value.trim();
  if (/^\d{1,9}$/.test(v)) return Math.min(Number(v) * 1000, MAX_RETRY_AFTER_MS);
  const at = Date.parse(v);
  return Number.isNaN(at) ? 0 : Math.max(0, Math.min(at - now, MAX_RETRY_AFTER_MS));
}

/** Keeps the server out of rotation for the response's `Retry-After`, unless it is the only one. */
export function honourRetryAfter(e: Endpoint, resp: ResponseHead, now: number): void {
  if (e.lone) return;
  let value: string | undefined;
  for (let f = 0; f < resp.fieldCount; f++) {
    const k = f * 4;
    if (fieldName(resp.raw, resp.fields[k] as number, resp.fields[k + 1] as number) !== F.RETRY_AFTER)
      continue;
    value = latin1(resp.raw, resp.fields[k + 2] as number, resp.fields[k + 3] as number);
  }
  const ms = retryAfterMs(value, now);
  if (ms > 0) e.downUntil = Math.max(e.downUntil, now + ms);
}
