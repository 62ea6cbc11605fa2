/**
 * Duration, size, percentage and address strings as the config contract writes them.
 * Each parser returns `undefined` on bad input so callers can turn that into a located issue.
 */
import { isIP } from 'node:net';

const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const DURATION_UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `250ms`, `3s`, `1.5m`, `2h` → milliseconds. `0` alone means zero (disabled where allowed). */
export function parseDuration(text: string): number | undefined {
  if (text === '0') return 0;
  const m = DURATION_RE.exec(text.trim());
  if (m === null) return undefined;
  const ms = Number(m[1]) * (DURATION_UNIT_MS[m[2] as string] as number);
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

/** Milliseconds as the largest whole unit (`30s`, `2m`, `250ms`), as a config would write them. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB|k|K|M|G)?$/;
const SIZE_UNIT: Record<string, number> = {
  B: 1,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  KB: 1000,
  MB: 1000 ** 2,
  GB: 1000 ** 3,
  k: 1024,
  K: 1024,
  M: 1024 ** 2,
  G: 1024 ** 3,
};

/** `16KiB`, `8MiB`, `512` (bytes) → bytes. */
export function parseSize(text: string): number | undefined {
  const m = SIZE_RE.exec(text.trim());
  if (m === null) return undefined;
  const n = Number(m[1]) * (SIZE_UNIT[m[2] ?? 'B'] as number);
  return Number.isFinite(n) ? Math.floor(n) : undefined;
}

/** `20%` → 0.2. */
export function parsePercent(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)%$/.exec(text.trim());
  if (m === null) return undefined;
  const v = Number(m[1]) / 100;
  return v >= 0 && v <= 1 ? v : undefined;
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/**
 * `127.0.0.1:9001`, `[::1]:9001`, `backend.internal:9002`, `:8080` (all interfaces).
 * Port 0 is allowed for listeners (the OS picks one; tests use it).
 */
export function parseHostPort(text: string, defaultHost = '0.0.0.0'): HostPort | undefined {
  const t = text.trim();
  let host: string;
  let portText: string;
  if (t.startsWith('[')) {
    const end = t.indexOf(']');
    if (end < 0 || t[end + 1] !== ':') return undefined;
    host = t.slice(1, end);
    portText = t.slice(end + 2);
  } else {
    const idx = t.lastIndexOf(':');
    if (idx < 0 || t.indexOf(':') !== idx) return undefined;
    host = t.slice(0, idx) || defaultHost;
    portText = t.slice(idx + 1);
  }
  if (!/^\d{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  if (port > 65535) return undefined;
  if (!/^[A-Za-z0-9._:-]+$/.test(host)) return undefined;
  return { host, port };
}

export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A listen value as written: a bare port (`6432`, `"6432"`) means all interfaces. */
export function normalizeListen(v: unknown): unknown {
  return typeof v === 'number' || (typeof v === 'string' && /^\d{1,5}$/.test(v)) ? `0.0.0.0:${v}` : v;
}

export interface Cidr {
  readonly address: string;
  readonly prefix: number;
  readonly family: 'ipv4' | 'ipv6';
}

/** `10.0.0.0/8`, `::1`, `fd00::/8` (a bare address is a /32 or /128). */
export function parseCidr(text: string): Cidr | undefined {
  const [address = '', prefixText, extra] = text.trim().split('/');
  if (extra !== undefined) return undefined;
  const v = isIP(address);
  if (v === 0) return undefined;
  const max = v === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (prefix > max) return undefined;
  return { address, prefix, family: v === 4 ? 'ipv4' : 'ipv6' };
}
