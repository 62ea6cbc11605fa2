/**
 * Datagrams the kernel dropped before zipline read them (a UDP listener's receive buffer full:
 * `udp.receive_buffer`, `net.core.rmem_max`). Linux keeps the count per socket in the last column
 * of /proc/net/udp and /proc/net/udp6; a socket is found by its local address and an inode this
 * process holds (with SO_REUSEPORT workers every worker has its own socket on the same address).
 * Read at scrape time only. Elsewhere, or when /proc cannot be read, nothing is counted.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { endianness } from 'node:os';
import { metrics } from '../metrics/catalog.js';
import { ipv6Bytes } from '../proxy-protocol/header.js';

/** One read of the tables serves every listener of a scrape. */
const FRESH_MS = 200;
let cached: { at: number; drops: Map<string, number> } | null = null;

/** `ip:port` as /proc/net/udp{,6} writes a local address (hex, each 32-bit word in host order). */
export function procAddress(ip: string, port: number): string | null {
  const p = port.toString(16).toUpperCase().padStart(4, '0');
  if (isIPv4(ip)) {
    const b = ip.split('.').map(Number);
    return `${hexWord(b[0] as number, b[1] as number, b[2] as number, b[3] as number)}:${p}`;
  }
  if (!isIPv6(ip)) return null;
  const bytes = ipv6Bytes(ip);
  let out = '';
  for (let i = 0; i < 16; i += 4) {
    out += hexWord(
      bytes[i] as number,
      bytes[i + 1] as number,
      bytes[i + 2] as number,
      bytes[i + 3] as number,
    );
  }
  return `${out}:${p}`;
}

const LITTLE_ENDIAN = endianness() === 'LE';

/** Four bytes in network order as the kernel prints the u32 they make on this host (`%08X`). */
function hexWord(a: number, b: number, c: number, d: number): string {
  const word = LITTLE_ENDIAN ? [d, c, b, a] : [a, b, c, d];
  return word.map((x) => x.toString(16).toUpperCase().padStart(2, '0')).join('');
}

/** Kernel drops per local address (`HEX:PORT`) over this process's UDP sockets. */
export function parseDrops(table: string, inodes: ReadonlySet<string>, into: Map<string, number>): void {
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
    if (f.length < 13 || !inodes.has(f[9] as string)) continue;
    const local = f[1] as string;
    into.set(local, (into.get(local) ?? 0) + Number(f[12]));
  }
}

function readDrops(): Map<string, number> {
  const drops = new Map<string, number>();
  if (process.platform !== 'linux') return drops;
  try {
    const inodes = new Set<string>();
    for (const fd of readdirSync('/proc/self/fd')) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
        if (m !== null) inodes.add(m[1] as string);
      } catch {
        // closed between the listing and the link read
      }
    }
    for (const table of ['/proc/net/udp', '/proc/net/udp6']) {
      try {
        parseDrops(readFileSync(table, 'latin1'), inodes, drops);
      } catch {
        // no IPv6 table, or no /proc: nothing from it
      }
    }
  } catch {
    // /proc/self/fd unreadable: nothing counted
  }
  return drops;
}

/** Datagrams the kernel dropped on this process's UDP sockets bound to `ip:port` so far. */
export function udpKernelDrops(ip: string, port: number): number {
  const key = procAddress(ip, port);
  if (key === null) return 0;
  const now = Date.now();
  if (cached === null || now - cached.at > FRESH_MS) cached = { at: now, drops: readDrops() };
  return cached.drops.get(key) ?? 0;
}

/** A UDP listener's kernel drops, added to `zipline_udp_dropped_total` as they grow (at scrapes). */
export class KernelDropCounter {
  private reported = 0;

  constructor(private readonly listener: string) {}

  /** Drops counted so far on this socket. */
  get total(): number {
    return this.reported;
  }

  refresh(ip: string, port: number): void {
    const n = udpKernelDrops(ip, port);
    if (n > this.reported) {
      metrics.udpDropped.labels(this.listener, 'ZL_UDP_RECEIVE_BUFFER_FULL').inc(n - this.reported);
    }
    this.reported = n;
  }
}
