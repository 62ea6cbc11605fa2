/**
 * Destinations as the MS protocol and SOCKS5 write them: u8 address type (1 IPv4, 3 domain,
 * 4 IPv6), the address (4 bytes, u8 length + name, 16 bytes), u16 port. One codec for OPEN,
 * DATAGRAM and the SOCKS5 entry.
 */
import { isIP } from 'node:net';
import { ipv6Bytes } from '../proxy-protocol/header.js';
import { ADDRESS } from './constants.js';

export interface Destination {
  readonly host: string;
  readonly port: number;
}

/** Encoded size of `dest`. */
export function addressLength(dest: Destination): number {
  const v = isIP(dest.host);
  if (v === 4) return 1 + 4 + 2;
  if (v === 6) return 1 + 16 + 2;
  return 1 + 1 + Buffer.byteLength(dest.host) + 2;
}

/** Writes `dest` at `out[at…]`; returns the offset after it. Throws on a name over 255 bytes. */
export function writeAddress(out: Buffer, at: number, dest: Destination): number {
  const v = isIP(dest.host);
  let o = at;
  if (v === 4) {
    out[o++] = ADDRESS.IPV4;
    for (const part of dest.host.split('.')) out[o++] = Number(part);
  } else if (v === 6) {
    out[o++] = ADDRESS.IPV6;
    ipv6Bytes(dest.host).copy(out, o);
    o += 16;
  } else {
    const len = Buffer.byteLength(dest.host);
    if (len === 0 || len > 255) throw new RangeError(`host name of ${len} bytes`);
    out[o++] = ADDRESS.DOMAIN;
    out[o++] = len;
    o += out.write(dest.host, o, 'utf8');
  }
  out.writeUInt16BE(dest.port, o);
  return o + 2;
}

export function encodeAddress(dest: Destination): Buffer {
  const out = Buffer.allocUnsafe(addressLength(dest));
  writeAddress(out, 0, dest);
  return out;
}

/** Reads an address at `buf[at…]`: the destination and the offset after it, or null if malformed. */
export function readAddress(buf: Buffer, at: number): { dest: Destination; end: number } | null {
  const type = buf[at];
  let o = at + 1;
  let host: string;
  if (type === ADDRESS.IPV4) {
    if (buf.length < o + 4 + 2) return null;
    host = `${buf[o]}.${buf[o + 1]}.${buf[o + 2]}.${buf[o + 3]}`;
    o += 4;
  } else if (type === ADDRESS.IPV6) {
    if (buf.length < o + 16 + 2) return null;
    const parts: string[] = [];
    for (let i = 0; i < 16; i += 2) parts.push(buf.readUInt16BE(o + i).toString(16));
    host = compressIpv6(parts);
    o += 16;
  } else if (type === ADDRESS.DOMAIN) {
    const len = buf[o];
    if (len === undefined || len === 0 || buf.length < o + 1 + len + 2) return null;
    host = buf.toString('utf8', o + 1, o + 1 + len);
    // a name is letters, digits, '-', '.', '_' (no control bytes, spaces or '/': it reaches DNS)
    if (!/^[A-Za-z0-9._-]+$/.test(host)) return null;
    o += 1 + len;
  } else return null;
  const port = buf.readUInt16BE(o);
  return { dest: { host, port }, end: o + 2 };
}

function compressIpv6(parts: string[]): string {
  // the longest run of zero groups becomes '::' (RFC 5952)
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (parts[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && parts[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return parts.join(':');
  return `${parts.slice(0, best).join(':')}::${parts.slice(best + bestLen).join(':')}`;
}

/** `host:port` for logs (IPv6 in brackets). */
export function formatDestination(d: Destination): string {
  return d.host.includes(':') ? `[${d.host}]:${d.port}` : `${d.host}:${d.port}`;
}
