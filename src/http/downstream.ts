/**
 * What an exchange needs from the client side, whatever protocol the client speaks: the HTTP/1.1
 * connection (`ClientConnection`) or an HTTP/2 stream (`H2Downstream`).
 */
import type { ErrorCode } from '../errors.js';
import type { ResponseHead } from './parser/response-head.js';
import type { ProxyExchange } from './proxy-exchange.js';
import type { UpgradeEnded } from './upgrade-pump.js';
import type { UpstreamConnection } from './upstream-connection.js';

export interface Downstream {
  readonly clientIp: string;
  readonly clientPort: number;
  readonly trusted: boolean;
  /** Hash of the client address (for `balance: hash` on `client_ip`). */
  readonly clientHash: number;
  /** The client's HTTP version for the access log: `'2'` for HTTP/2; null when the head says (1.x). */
  readonly httpVersion: '2' | null;
  /** The response body can be passed with the upstream's chunked framing as is (HTTP/1.1 client). */
  readonly passesChunked: boolean;
  /** `100 Continue` to a client that sent `Expect: 100-continue`. */
  sendContinue(): void;
  /** An informational (1xx other than 101) response. */
  sendInterim(resp: ResponseHead): void;
  /**
   * The final response head, with the whole body when it is small and already at hand (`inline`:
   * one write for both; the exchange completes right after). `inline` views the upstream read
   * buffer: valid during the call only. False when this client cannot be given that head (HTTP/2
   * refuses some HTTP/1.1 can carry): nothing was sent, and the exchange answers 502 instead.
   */
  sendHead(ex: ProxyExchange, resp: ResponseHead, inline: Buffer | null): boolean;
  /**
   * Response body bytes; false when the client is not keeping up (wait for `onClientDrain`).
   * `chunk` may be a view of the upstream read buffer: valid during the call only (copy to keep).
   */
  write(chunk: Buffer): boolean;
  /** The response is complete. */
  finish(ex: ProxyExchange): void;
  /**
   * The exchange failed: before the head, an error response with this code; after it, the client
   * connection (or stream) is aborted so a truncated body is never taken for a complete one.
   */
  fail(ex: ProxyExchange, code: ErrorCode): void;
  /**
   * The plain TCP socket response bytes may be spliced into natively, once everything written so
   * far has left Node (flushed now); null when not possible (TLS, HTTP/2, bytes still queued).
   */
  spliceTarget(): import('node:net').Socket | null;
  pauseBody(): void;
  resumeBody(): void;
  /**
   * 101 from upstream: switch to a raw two-way pump (HTTP/1.1 only; false if not possible).
   * The upstream connection's reads must then be diverted to the pump. `upstreamRest` is valid
   * during the call only. `ended` is called once when the upgraded session is over (both sides
   * closed), with the bytes it moved each way.
   */
  upgrade(
    ex: ProxyExchange,
    upstream: UpstreamConnection,
    head: string,
    upstreamRest: Buffer,
    ended: UpgradeEnded,
  ): boolean;
}
