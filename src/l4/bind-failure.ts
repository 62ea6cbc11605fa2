/** The text of a failed bind or listen, shared by every listening part (listeners, admin, shm, workers). */
import { parseHostPort } from '../config/units.js';

/**
 * Why a bind or listen failed, for the message a user reads: the errno code and, for the usual
 * causes, what to do about it (nginx prints the errno text alone).
 */
export function bindFailure(
  err: unknown,
  listen: string,
  inUse = 'another process is listening there',
): string {
  const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  const port = parseHostPort(listen)?.port ?? 0;
  if (code === 'EACCES' && port > 0 && port < 1024)
    return `${code} (ports below 1024 need root or CAP_NET_BIND_SERVICE: sudo setcap cap_net_bind_service=+ep "$(command -v node)")`;
  if (code === 'EADDRINUSE') return `${code} (${inUse})`;
  if (code === 'EADDRNOTAVAIL') return `${code} (no interface of this host has that address)`;
  return code;
}
