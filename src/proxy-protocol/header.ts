/**
 * The PROXY protocol header (HAProxy's spec, doc/proxy-protocol.txt, versions 1 and 2): what a
 * load balancer in front of zipline writes at the start of a connection to say whom it relays,
 * and what zipline writes to a server behind it (`send_proxy`).
 *
 * - v1 is one text line: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`, or `PROXY UNKNOWN…\r\n`,
 *   at most 107 bytes.
 * - v2 is binary: a 12-byte signature, version/command, family/transport, a 16-bit length, then
 *   the addresses (12 bytes for TCP over IPv4, 36 for IPv6) and TLVs, which zipline skips.
 *
 * A header whose command is LOCAL (v2: a health check of the balancer itself), whose family is
 * UNKNOWN/UNSPEC, UNIX or a datagram transport says nothing zipline can use: the connection's own
 * addresses stand (the spec asks receivers to accept these). Everything else that does not parse
 * exactly is refused; nothing past the header is read here.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** The v2 signature (spec §2.2). */
export const V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
/** A v1 line's longest form, CRLF included (spec §2.1). */
export const V1_MAX = 107;
/** Fixed part of a v2 header: signature, version/command, family, length. */
export const V2_FIXED = 16;
/**
 * The largest v2 header accepted (fixed part and TLVs). The spec allows 64 KiB of TLVs; balancers
 * send a few hundred bytes at most (AWS: a VPC endpoint id; TLS details), and HAProxy itself reads
 * it within one buffer (16 KiB by default).
 */
export const V2_MAX = 16 * 1024;

const V2_CMD_LOCAL = 0x20;
const V2_CMD_PROXY = 0x21;
const V2_TCP4 = 0x11;
const V2_TCP6 = 0x21;
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');

export interface ProxyAddress {
  readonly ip: string;
  readonly port: number;
}

export type ParseResult =
  /** More bytes are needed. */
  | { readonly kind: 'more' }
  | { readonly kind: 'error'; readonly reason: string }
  /**
   * A complete header of `length` bytes. `source`/`destination` are null when the header says to
   * use the connection's own (LOCAL, UNKNOWN, UNSPEC, UNIX, datagram).
   */
  | {
      readonly kind: 'done';
      readonly length: number;
      readonly version: 1 | 2;
      readonly source: ProxyAddress | null;
      readonly destination: ProxyAddress | null;
    };

const MORE: ParseResult = Object.freeze({ kind: 'more' });

function error(reason: string): ParseResult {
  return { kind: 'error', reason };
}

/** Parses the header at the start of `buf` (which may hold bytes past it). */
export function parseProxyHeader(buf: Buffer): ParseResult {
  if (buf.length === 0) return MORE;
  if (buf[0] === 0x0d) return parseV2(buf);
  return parseV1(buf);
}

function parseV1(buf: Buffer): ParseResult {
  const prefix = Math.min(buf.length, V1_PREFIX.length);
  if (buf.compare(V1_PREFIX, 0, prefix, 0, prefix) !== 0) return error('not a PROXY protocol header');
  const end = buf.indexOf('\r\n', 0, 'latin1');
  if (end < 0 || end + 2 > V1_MAX) {
    if (buf.length >= V1_MAX) return error('v1 line longer than 107 bytes');
    // a CR that is not followed by LF ends nothing: wait for the rest only while it can still fit
    return MORE;
  }
  const line = buf.toString('latin1', V1_PREFIX.length, end);
  const done = (source: ProxyAddress | null, destination: ProxyAddress | null): ParseResult => ({
    kind: 'done',
    length: end + 2,
    version: 1,
    source,
    destination,
  });
  if (line === 'UNKNOWN' || line.startsWith('UNKNOWN ')) return done(null, null);
  const parts = line.split(' ');
  if (parts.length !== 5) return error('v1: expected TCP4|TCP6 SRC DST SPORT DPORT');
  const [proto, src, dst, sport, dport] = parts as [string, string, string, string, string];
  const valid = proto === 'TCP4' ? isIPv4 : proto === 'TCP6' ? isIPv6 : null;
  if (valid === null) return error(`v1: unknown protocol ${JSON.stringify(proto.slice(0, 16))}`);
  if (!valid(src) || !valid(dst)) return error(`v1: address is not ${proto === 'TCP4' ? 'IPv4' : 'IPv6'}`);
  const sp = port(sport);
  const dp = port(dport);
  if (sp < 0 || dp < 0) return error('v1: port is not 0–65535');
  return done({ ip: src, port: sp }, { ip: dst, port: dp });
}

/** A decimal port as v1 writes it (no sign, no leading zero), or -1. */
function port(s: string): number {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(s)) return -1;
  const n = Number(s);
  return n <= 65535 ? n : -1;
}

function parseV2(buf: Buffer): ParseResult {
  const sig = Math.min(buf.length, V2_SIGNATURE.length);
  if (buf.compare(V2_SIGNATURE, 0, sig, 0, sig) !== 0) return error('not a PROXY protocol header');
  if (buf.length < V2_FIXED) return MORE;
  const verCmd = buf[12] as number;
  if (verCmd !== V2_CMD_LOCAL && verCmd !== V2_CMD_PROXY) {
    return error(`v2: version/command 0x${verCmd.toString(16)} (expected 0x20 LOCAL or 0x21 PROXY)`);
  }
  const family = buf[13] as number;
  const length = V2_FIXED + buf.readUInt16BE(14);
  if (length > V2_MAX) return error(`v2: header of ${length} bytes (at most ${V2_MAX})`);
  if (buf.length < length) return MORE;
  const done = (source: ProxyAddress | null, destination: ProxyAddress | null): ParseResult => ({
    kind: 'done',
    length,
    version: 2,
    source,
    destination,
  });
  if (verCmd === V2_CMD_LOCAL) return done(null, null);
  if (family === V2_TCP4) {
    if (length < V2_FIXED + 12) return error('v2: TCP over IPv4 needs 12 bytes of addresses');
    return done(
      { ip: ipv4(buf, 16), port: buf.readUInt16BE(24) },
      { ip: ipv4(buf, 20), port: buf.readUInt16BE(26) },
    );
  }
  if (family === V2_TCP6) {
    if (length < V2_FIXED + 36) return error('v2: TCP over IPv6 needs 36 bytes of addresses');
    return done(
      { ip: ipv6(buf, 16), port: buf.readUInt16BE(48) },
      { ip: ipv6(buf, 32), port: buf.readUInt16BE(50) },
    );
  }
  const af = family >> 4;
  const transport = family & 0x0f;
  if (af > 3 || transport > 2) return error(`v2: unknown family 0x${family.toString(16)}`);
  return done(null, null); // UNSPEC, UNIX or a datagram transport: the connection's own addresses
}

function ipv4(buf: Buffer, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
}

/** RFC 5952 text (as Node prints addresses): longest zero run as `::`, IPv4-mapped as `::ffff:a.b.c.d`. */
export function ipv6(buf: Buffer, at: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(at + i * 2));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) return `::ffff:${ipv4(buf, at + 12)}`;
  let best = -1;
  let bestLen = 1; // a single zero group is not compressed
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]): string => gs.map((g) => g.toString(16)).join(':');
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

/** The 16 bytes of an IPv6 address (any textual form Node accepts, IPv4-mapped included). */
export function ipv6Bytes(ip: string): Buffer {
  const out = Buffer.alloc(16);
  let text = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4 !== null) {
    const octets = (v4[1] as string).split('.').map(Number);
    text = `${text.slice(0, v4.index)}${(((octets[0] as number) << 8) | (octets[1] as number)).toString(16)}:${(((octets[2] as number) << 8) | (octets[3] as number)).toString(16)}`;
  }
  const [head = '', tail] = text.split('::') as [string, string | undefined];
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  for (let i = 0; i < 8; i++) out.writeUInt16BE(Number.parseInt(groups[i] ?? '0', 16) || 0, i * 2);
  return out;
}

/** An IPv4 address as `::ffff:a.b.c.d`, to pair it with an IPv6 one in one header. */
function mapped(ip: string): string {
  return isIPv4(ip) ? `::ffff:${ip}` : ip;
}

/**
 * The header zipline sends a server (`send_proxy`): `source` is the client, `destination` the
 * address it connected to. Mixed families are sent as IPv6 (the IPv4 one mapped).
 */
export function buildProxyHeader(version: 1 | 2, source: ProxyAddress, destination: ProxyAddress): Buffer {
  const both4 = isIPv4(source.ip) && isIPv4(destination.ip);
  const src = both4 ? source.ip : mapped(source.ip);
  const dst = both4 ? destination.ip : mapped(destination.ip);
  if (version === 1) {
    const proto = both4 ? 'TCP4' : 'TCP6';
    return Buffer.from(`PROXY ${proto} ${src} ${dst} ${source.port} ${destination.port}\r\n`, 'latin1');
  }
  const addrLen = both4 ? 12 : 36;
  const out = Buffer.alloc(V2_FIXED + addrLen);
  V2_SIGNATURE.copy(out, 0);
  out[12] = V2_CMD_PROXY;
  out[13] = both4 ? V2_TCP4 : V2_TCP6;
  out.writeUInt16BE(addrLen, 14);
  if (both4) {
    const put = (ip: string, at: number): void => {
      const o = ip.split('.');
      for (let i = 0; i < 4; i++) out[at + i] = Number(o[i]);
    };
    put(src, 16);
    put(dst, 20);
    out.writeUInt16BE(source.port, 24);
    out.writeUInt16BE(destination.port, 26);
  } else {
    ipv6Bytes(src).copy(out, 16);
    ipv6Bytes(dst).copy(out, 32);
    out.writeUInt16BE(source.port, 48);
    out.writeUInt16BE(destination.port, 50);
  }
  return out;
}

/**
 * The header of a connection zipline makes for itself (a health check): v1 `UNKNOWN`, v2 LOCAL.
 * The receiver uses the connection's own addresses.
 */
export function localProxyHeader(version: 1 | 2): Buffer {
  if (version === 1) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  const out = Buffer.alloc(V2_FIXED);
  V2_SIGNATURE.copy(out, 0);
  out[12] = V2_CMD_LOCAL;
  return out;
}
