/**
 * `listeners[].proxy_protocol`, compiled once: which peers must begin their connections with a
 * PROXY protocol header, and how long they have to send it. `upstreams.*.send_proxy` too.
 */
import { BlockList } from 'node:net';
import { parseCidr } from '../config/units.js';

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

/**
 * Addresses and CIDR blocks (validated by the schema) as a BlockList. An IPv4 block also covers
 * its IPv4-mapped IPv6 form: an IPv4 peer of a dual-stack socket appears as ::ffff:a.b.c.d.
 */
export function addressList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const text of cidrs) {
    const c = parseCidr(text);
    if (c === undefined) continue; // validated by the schema
    list.addSubnet(c.address, c.prefix, c.family);
    if (c.family === 'ipv4') list.addSubnet(`::ffff:${c.address}`, 96 + c.prefix, 'ipv6');
  }
  return list;
}

/** Whether `ip` is on `list`. */
export function listed(list: BlockList, ip: string): boolean {
  return list.check(ip, ip.includes(':') ? 'ipv6' : 'ipv4');
}
