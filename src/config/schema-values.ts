/**
 * The value types of the config schema (schema.ts, schema-tunnel.ts): durations, sizes,
 * percentages, addresses, cipher lists, allow-list entries, each parsed here so that everything
 * downstream sees milliseconds, bytes and checked strings.
 */
import { createSecureContext } from 'node:tls';
import { z } from 'zod';
import { parseAllowEntry } from '../tunnel/allow-list.js';
import {
  normalizeListen,
  parseCidr,
  parseDuration,
  parseHostPort,
  parsePercent,
  parseSize,
} from './units.js';

/**
 * A duration is a string with a unit. A bare number other than 0 is refused with its own message:
 * nginx reads `3` as seconds and HAProxy as milliseconds, so it cannot be guessed.
 */
export const duration = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const ms = typeof v === 'number' ? (v === 0 ? 0 : undefined) : parseDuration(v);
  if (ms === undefined) {
    ctx.issues.push({
      code: 'custom',
      input: v,
      message:
        typeof v === 'number'
          ? `a duration needs a unit: write ${v}s or ${v}ms, not ${v}`
          : `invalid duration "${v}": use a number with a unit (250ms, 3s, 2m, 1h)`,
    });
    return z.NEVER;
  }
  return ms;
});

export const percent = z.string().transform((text, ctx) => {
  const v = parsePercent(text);
  if (v === undefined) {
    ctx.issues.push({ code: 'custom', input: text, message: `invalid percentage "${text}": use 0%–100%` });
    return z.NEVER;
  }
  return v;
});

export const hostPort = z.string().refine((s) => parseHostPort(s) !== undefined, {
  message: 'expected host:port (IPv6 as [::1]:port)',
});

export const count = (min: number, max: number) => z.int().min(min).max(max);

/** A listen address; a bare port (`6432` or `"6432"`) means all interfaces, as nginx `listen 6432;`. */
export const listenAddress = z.preprocess(normalizeListen, hostPort).meta(inputAlso({ type: 'integer' }));

/**
 * What a `z.preprocess` also takes before it rewrites it (a bare port, `host:port` for an object),
 * for the JSON Schema (`json-schema.ts`), which describes the rewritten form only.
 */
export function inputAlso(schema: Record<string, unknown>): { inputAlso: Record<string, unknown> } {
  return { inputAlso: schema };
}

export const size = z.union([z.int().min(0), z.string()]).transform((v, ctx) => {
  const n = typeof v === 'number' ? v : parseSize(v);
  if (n === undefined) {
    ctx.issues.push({ code: 'custom', input: v, message: `invalid size "${v}": use 512, 16KiB, 8MiB` });
    return z.NEVER;
  }
  return n;
});

/** A size within `min`–`max` bytes; `range` says so in the message (`16KiB – 2GiB`). */
export const sizeIn = (min: number, max: number, range: string) =>
  size.refine((n) => n >= min && n <= max, range);

/** A UDP socket's SO_RCVBUF (UDP listeners, the tunnel agent's UDP forwards): 0 keeps the kernel's. */
export const receiveBuffer = sizeIn(0, 256 * 1024 * 1024, 'expected 0 (the kernel default) to 256MiB');

/**
 * A request rate, in requests per second: a number (`50`, `0.5`), or `N/s`, `N/m`, `N/h` (nginx's
 * `30r/m` is read too). At most 1,000,000 per second.
 */
export const requestRate = z.union([z.number(), z.string()]).transform((v, ctx) => {
  let perSecond: number | undefined;
  if (typeof v === 'number') perSecond = v;
  else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*r?\s*\/\s*(s|m|h)\s*$/.exec(v);
    if (m !== null) perSecond = Number(m[1]) / (m[2] === 's' ? 1 : m[2] === 'm' ? 60 : 3600);
  }
  if (perSecond === undefined || !(perSecond > 0) || perSecond > 1_000_000) {
    ctx.issues.push({
      code: 'custom',
      input: v,
      message: `invalid rate "${v}": use requests per second (50, 0.5) or 50/s, 30/m, 100/h`,
    });
    return z.NEVER;
  }
  return perSecond;
});

/** An address or CIDR block (`10.0.0.0/8`, `::1`, `fd00::/8`). */
export const cidr = z.string().refine((s) => parseCidr(s) !== undefined, {
  message: 'expected an IP address or CIDR block (10.0.0.0/8)',
});

/** Whether OpenSSL can use a cipher list (it ignores unknown names while one matches). */
export function knownCiphers(list: string): boolean {
  try {
    createSecureContext({ ciphers: list });
    return true;
  } catch {
    return false;
  }
}

/** A relay `allow` entry (src/tunnel/allow-list.ts). */
export const allowEntry = z.string().superRefine((text, ctx) => {
  const r = parseAllowEntry(text);
  if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r });
});
