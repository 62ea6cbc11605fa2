/**
 * The path a request is routed by and forwarded with: the target's path (an absolute-form
 * target's authority dropped), normalised so that every spelling of a path reaches the route
 * that names it, as nginx matches `location`s and Envoy's `normalize_path` + `merge_slashes` do.
 * Without it `/public/../admin`, `/%61dmin` or `//admin` would pass a route's `clients` or
 * `rate_limit` on `/admin` and be served as `/admin` by an upstream that normalises for itself.
 *
 * - percent-encoded unreserved characters (`A–Z a–z 0–9 - . _ ~`) are decoded (RFC 3986
 *   §6.2.2.2: the same URI); other escapes (`%2F`, `%20`, UTF-8…) are left as they came;
 * - `.` and `..` segments are removed (RFC 3986 §5.2.4); a `..` above the root is refused (400,
 *   as nginx does);
 * - runs of `/` are merged into one (nginx `merge_slashes on`), unless the listener says
 *   `merge_slashes: false`;
 * - the query is kept as it came.
 *
 * The upstream receives the normalised path, so that it serves what was routed. A path without
 * `%`, `/.` or `//` is returned as it is (no copy).
 */
import { pathOf } from './route-table.js';

/** The normalised path of `target` (query kept), or null when it climbs above the root. */
export function requestPath(target: string, mergeSlashes: boolean): string | null {
  const path = pathOf(target);
  if (path.charCodeAt(0) !== 0x2f) return path; // `*` (OPTIONS), or a form the parser refused
  const q = path.indexOf('?');
  const end = q < 0 ? path.length : q;
  if (!needsWork(path, end, mergeSlashes)) return path;
  const normal = normalize(decodeUnreserved(path.slice(0, end)), mergeSlashes);
  if (normal === null) return null;
  return q < 0 ? normal : normal + path.slice(q);
}

function needsWork(path: string, end: number, mergeSlashes: boolean): boolean {
  const pct = path.indexOf('%');
  if (pct >= 0 && pct < end) return true;
  const dot = path.indexOf('/.');
  if (dot >= 0 && dot < end) return true;
  if (!mergeSlashes) return false;
  const slashes = path.indexOf('//');
  return slashes >= 0 && slashes < end;
}

function decodeUnreserved(path: string): string {
  if (!path.includes('%')) return path;
  return path.replace(/%([0-9A-Fa-f]{2})/g, (seq, hex: string) => {
    const c = Number.parseInt(hex, 16);
    return isUnreserved(c) ? String.fromCharCode(c) : seq;
  });
}

function isUnreserved(c: number): boolean {
  return (
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x2d || // -
    c === 0x2e || // .
    c === 0x5f || // _
    c === 0x7e // ~
  );
}

/** `path` starts with `/`; null when a `..` would climb above it. */
function normalize(path: string, mergeSlashes: boolean): string | null {
  const segments = path.split('/'); // the first is the empty one before the leading slash
  const out: string[] = [];
  const last = segments.length - 1;
  for (let i = 1; i <= last; i++) {
    const s = segments[i] as string;
    if (s === '..') {
      if (out.length === 0) return null;
      out.pop();
      if (i === last) out.push(''); // `/a/b/..` is the directory `/a/`
    } else if (s === '.') {
      if (i === last) out.push('');
    } else if (s === '' && mergeSlashes && i < last) {
      // `//` merged: an empty segment is kept only as the trailing slash
    } else {
      out.push(s);
    }
  }
  return `/${out.join('/')}`;
}
