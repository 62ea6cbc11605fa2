/**
 * What an exchange needs from the listener it runs for (`HttpListener`), as `Downstream` is what
 * it needs from the client side.
 */
import type { ProxyExchange } from './proxy-exchange.js';
import type { HttpListenerSettings } from './settings.js';

export interface ExchangeHost {
  readonly name: string;
  readonly settings: HttpListenerSettings;
  readonly maxBodyReplay: number;
  /** Large Content-Length response bodies may go through the native splice pump. */
  readonly spliceBodies: boolean;
  /** Small writes to plain TCP sockets may be sent directly (write-batch.ts). */
  readonly directWrites: boolean;
  /** The exchange is over: metrics and its access-log line. */
  onExchangeEnd(ex: ProxyExchange): void;
}
