import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Constant-time bearer-token check. Both sides are hashed first so the comparison takes the same
 * time whatever the lengths (timingSafeEqual needs equal lengths).
 */
export function tokenMatches(header: string | undefined, token: string): boolean {
  if (token === '') return true;
  const given = header?.startsWith('Bearer ') ? header.slice(7) : '';
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b) && given.length > 0;
}
