/**
 * The relay's destination allow list. Nothing is forwarded that an entry does not name:
 * `127.0.0.1:*`, `10.0.0.0/8:5432`, `[fd00::/8]:443`, `db.internal:5432`, `*.internal:443`.
 * A port is a number, a range `8000-8099`, or `*`. Names match names; address and CIDR entries
 * match the address a name resolves to (the relay then connects to that checked address, so a
 * DNS answer cannot change between the check and the dial).
 */
import { BlockList, isIP } from 'node:net';
import { unmappedIp } from '../config/address-list.js';

interface PortRange {
  readonly lo: number;
  readonly hi: number;
}

interface NameRule {
  /** Exact lower-case name, or the suffix (with its leading dot) of a `*.` pattern. */
  readonly name: string;
  readonly wildcard: boolean;
  readonly ports: PortRange;
}

interface AddressRule {
  readonly block: BlockList;
  readonly ports: PortRange;
}

/** Parses one entry; a string describing the problem when it is malformed. */
export function parseAllowEntry(text: string): NameRule | AddressRule | string {
  const t = text.trim();
  let hostPart: string;
  let portPart: string;
  if (t.startsWith('[')) {
    const end = t.indexOf(']');
    if (end < 0 || t[end + 1] !== ':') return 'IPv6 entries are written [addr/prefix]:port';
    hostPart = t.slice(1, end);
    portPart = t.slice(end + 2);
  } else {
    const idx = t.lastIndexOf(':');
    if (idx <= 0) return 'expected host:port, cidr:port or *.suffix:port (port may be * or a range)';
    hostPart = t.slice(0, idx);
    portPart = t.slice(idx + 1);
  }
  let ports: PortRange;
  if (portPart === '*') ports = { lo: 1, hi: 65535 };
  else {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(portPart);
    if (m === null) return `bad port "${portPart}"`;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (lo < 1 || hi > 65535 || lo > hi) return `bad port range "${portPart}"`;
    ports = { lo, hi };
  }
  const [addr = '', prefixText, extra] = hostPart.split('/');
  const family = isIP(addr);
  if (family !== 0) {
    const max = family === 4 ? 32 : 128;
    const prefix = prefixText === undefined ? max : Number(prefixText);
    if (extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > max)
      return `bad CIDR "${hostPart}"`;
    const block = new BlockList();
    block.addSubnet(addr, prefix, family === 4 ? 'ipv4' : 'ipv6');
    return { block, ports };
  }
  if (prefixText !== undefined) return `bad CIDR "${hostPart}"`;
  if (hostPart === '*') return 'a bare "*" host would forward anywhere: name hosts, suffixes or CIDR blocks';
  const wildcard = hostPart.startsWith('*.');
  const name = (wildcard ? hostPart.slice(1) : hostPart).toLowerCase();
  if (!/^\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(name)) return `bad host name "${hostPart}"`;
  return { name, wildcard, ports };
}

export class AllowList {
  private readonly names: NameRule[] = [];
  private readonly addresses: AddressRule[] = [];

  constructor(entries: readonly string[]) {
    for (const e of entries) {
      const rule = parseAllowEntry(e);
      if (typeof rule === 'string') throw new Error(`allow entry "${e}": ${rule}`);
      if ('block' in rule) this.addresses.push(rule);
      else this.names.push(rule);
    }
  }

  /** A destination given by name (before resolution). */
  allowsName(host: string, port: number): boolean {
    const h = host.toLowerCase();
    for (const r of this.names) {
      if (port < r.ports.lo || port > r.ports.hi) continue;
      if (r.wildcard ? h.endsWith(r.name) && h.length > r.name.length : h === r.name) return true;
    }
    return false;
  }

  /** A destination given by (or resolved to) an address. */
  allowsAddress(addr: string, port: number): boolean {
    // an IPv4-mapped IPv6 address is checked as the IPv4 address it is
    const address = unmappedIp(addr);
    const family = isIP(address);
    if (family === 0) return false;
    const type = family === 4 ? 'ipv4' : 'ipv6';
    for (const r of this.addresses) {
      if (port >= r.ports.lo && port <= r.ports.hi && r.block.check(address, type)) return true;
    }
    return false;
  }

  /** Whether any address rule exists (else a name must be allowed by name). */
  get hasAddressRules(): boolean {
    return this.addresses.length > 0;
  }
}
