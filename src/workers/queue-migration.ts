/**
 * Linux's `net.ipv4.tcp_migrate_req` (5.14 and later): when a SO_REUSEPORT listening socket
 * closes, the connections waiting in its accept queue move to another socket of its group instead
 * of being reset. Each worker has such a socket, closed at every drain; at an upgrade the new
 * workers' sockets are in the group, so with the setting on no connection is lost there.
 */
import { readFileSync } from 'node:fs';

export const MIGRATE_SYSCTL = '/proc/sys/net/ipv4/tcp_migrate_req';

/** Whether the kernel moves a closing socket's queued connections (false where it cannot be read). */
export function migratesQueuedConnections(read: (file: string) => string = readText): boolean {
  try {
    return read(MIGRATE_SYSCTL).trim() === '1';
  } catch {
    return false;
  }
}

function readText(file: string): string {
  return readFileSync(file, 'utf8');
}
