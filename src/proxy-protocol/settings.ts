/**
 * `listeners[].proxy_protocol`, compiled once: which peers must begin their connections with a
 * PROXY protocol header, and how long they have to send it. `upstreams.*.send_proxy` too.
 */
import type { BlockList } from 'node:net';
import { addressList } from '../config/address-list.js';

export interface ProxyProtocolConfig {
  readonly from: readonly string[];
  readonly timeout: number;
}

export interface ProxyProtocolSettings {
  /** The peers (load balancers) whose connections start with a header. */
  readonly from: BlockList;
  readonly timeoutMs: number;
}

/** `upstreams.*.send_proxy` as a header version, or 0 for none. */
export type SendProxy = 0 | 1 | 2;

export function sendProxyVersion(value: 'off' | 'v1' | 'v2'): SendProxy {
  return value === 'v1' ? 1 : value === 'v2' ? 2 : 0;
}

export function compileProxyProtocol(cfg: ProxyProtocolConfig | undefined): ProxyProtocolSettings | null {
  if (cfg === undefined) return null;
  return Object.freeze({ from: addressList(cfg.from), timeoutMs: cfg.timeout });
}
