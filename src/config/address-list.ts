/**
 * Address lists from config (`trusted_proxies`, `proxy_protocol.from`): addresses and CIDR blocks,
 * validated by the schema, compiled once into a BlockList and checked per connection.
 */
import { BlockList, isIP } from 'node:net';
import { parseCidr } from './units.js';

/**
 * Addresses and CIDR blocks as a BlockList. An IPv4 block also covers its IPv4-mapped IPv6 form:
 * an IPv4 peer of a dual-stack socket appears as ::ffff:a.b.c.d.
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

/** An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) as the IPv4 it is. */
export function unmappedIp(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/**
 * Whether `ip` is on `list` (IPv4-mapped IPv6 matches IPv4 blocks too). Once per connection, not
 * per request: `BlockList.check` builds a SocketAddress per call.
 */
export function listed(list: BlockList, ip: string): boolean {
  return list.check(ip, ip.includes(':') ? 'ipv6' : 'ipv4');
}
