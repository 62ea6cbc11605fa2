/**
 * Versions and message sequences as the `/shm` API names them. Both are counters kept in the
 * segment, so they start again in a segment that replaced another (a C program that unlinks it at
 * exit and creates it at its next start: segment-watch.ts). A bare number from before the
 * replacement would then name something else: a client holding version 1 of the old snapshot
 * would get 304 for version 1 of the new one, and a Last-Event-ID of 50 would skip the new
 * segment's first 50 messages. So ETags and SSE ids carry the segment's tag too, `"7-TAG"` and
 * `id: 7-TAG`, made from its identity block (creation time and creator pid, written once by its
 * creator). Bare numbers are still taken where clients send them back.
 */
import { ZiplineError } from '../errors.js';

/** The tag of a segment created at `createdMs` (Unix ms) by process `pid`. */
export function segmentTag(createdMs: number, pid: number): string {
  return `${createdMs.toString(36)}${pid.toString(36).padStart(4, '0')}`;
}

/** The ETag of snapshot `version` in the segment tagged `tag`. */
export function etagOf(version: number, tag: string): string {
  return `"${version}-${tag}"`;
}

/** An SSE id: a version or sequence of the segment tagged `tag`. */
export function eventId(n: number, tag: string): string {
  return `${n}-${tag}`;
}

/**
 * A version or sequence a client sent back (an ETag, Last-Event-ID or `since`): `7-TAG` or a bare
 * `7`, quoted or not. `tag` is null for a bare number. Null when it is neither.
 */
export function parseRef(text: string): { n: number; tag: string | null } | null {
  const m = /^(?:W\/)?"?(\d{1,15})(?:-([0-9a-z]{1,24}))?"?$/.exec(text.trim());
  if (m === null) return null;
  return { n: Number(m[1]), tag: m[2] ?? null };
}

/** `If-None-Match` (a list, or `*`) names the representation tagged `etag`. */
export function noneMatch(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(',').some((t) => {
    const v = t.trim();
    return v === '*' || v === etag || v === `W/${etag}`;
  });
}

/**
 * The version an `If-Match` requires, for a compare-and-set on the segment tagged `tag`; null
 * without one. An ETag of a segment that has been replaced since is refused (412).
 */
export function ifMatchVersion(header: string | undefined, tag: string): number | null {
  if (header === undefined) return null;
  const ref = parseRef(header);
  if (ref === null)
    throw new ZiplineError('ZL_SHM_PRECONDITION', 'If-Match must be a version ETag ("7-TAG" or "7")');
  if (ref.tag !== null && ref.tag !== tag)
    throw new ZiplineError('ZL_SHM_PRECONDITION', 'the segment was replaced since the ETag in If-Match');
  return ref.n;
}
