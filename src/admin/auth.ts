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

/**
 * The warning logged when the admin API is bound beyond loopback (127.0.0.0/8, ::1, IPv4-mapped
 * loopback) with no token; null otherwise. Not refused: containers bind 0.0.0.0 for scrapes.
 */
export function exposureWarning(address: string, token: string): string | null {
  if (token !== '' || isLoopback(address)) return null;
  return 'admin API reachable beyond this host without admin.token: anyone who can connect can read stats and metrics (reload and CPU profiles are refused to other hosts until a token is set)';
}

/** Endpoints that change or load the process: without a token, only this host may call them. */
const CONTROL_PATHS: ReadonlySet<string> = new Set(['/reload', '/upgrade', '/debug/profile']);

/**
 * No token set and a peer beyond loopback asking for a control endpoint: refused (403), so that an
 * admin API bound to 0.0.0.0 for scrapes does not let the network reload, upgrade or profile the process.
 */
export function controlRefused(path: string, token: string, peer: string): boolean {
  return token === '' && CONTROL_PATHS.has(path) && !isLoopback(peer);
}

/** 127.0.0.0/8, ::1 and IPv4-mapped loopback: the addresses only this host reaches. */
export function isLoopback(address: string): boolean {
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}
