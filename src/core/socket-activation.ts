/**
 * systemd socket activation (sd_listen_fds(3)), as Caddy and HAProxy take it: a `.socket` unit
 * binds the addresses (ports below 1024 without privileges for zipline, and kept open across
 * `systemctl restart`, so connections wait in the queue instead of being refused), and systemd
 * passes them from descriptor 3 with `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`. A socket
 * named as a listener (`FileDescriptorName=web`; `admin` for the admin API, `tunnel.relay`, and
 * `tunnel.agent.socks5` / `tunnel.agent.http_proxy` for the agent's entries) is that listener's
 * instead of one it binds, whatever its `listen` says; the kind must match (stream for tcp, http,
 * https, socks5, http_proxy; datagram for udp). Read once at load and removed from the
 * environment, so children (workers, the config checker, a process started by an upgrade, which
 * is handed the sockets as at every upgrade) never take them. docs/OPERATIONS.md, "systemd".
 */
import type { BoundSocket, SocketKind } from './handover.js';
import { procBinding } from './proc-binding.js';

/** The first descriptor systemd passes (SD_LISTEN_FDS_START). */
const FIRST_FD = 3;

interface Activated {
  readonly fd: number;
  readonly name: string;
  readonly kind: SocketKind | null;
  readonly port: number;
  /** Why it cannot be used (not a TCP/UDP socket), or null. */
  readonly unusable: string | null;
  claimed: boolean;
}

const activated: Activated[] = parse(process.env);
for (const key of ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES']) delete process.env[key];

function parse(env: NodeJS.ProcessEnv): Activated[] {
  const count = Number(env.LISTEN_FDS ?? '');
  if (env.LISTEN_PID !== String(process.pid) || !Number.isInteger(count) || count <= 0) return [];
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  const proc = procBinding();
  const out: Activated[] = [];
  for (let i = 0; i < count; i++) {
    const fd = FIRST_FD + i;
    const name = names[i] || 'unknown';
    if (proc === null) {
      out.push({ fd, name, kind: null, port: 0, unusable: 'the native module is not built', claimed: false });
      continue;
    }
    proc.cloexec(fd); // for this process only: not its workers' or checks'
    const [kind, value] = proc.sockinfo(fd);
    out.push({
      fd,
      name,
      kind: kind === 1 ? 'tcp' : kind === 2 ? 'udp' : null,
      port: kind === 0 ? 0 : value,
      unusable: kind === 0 ? `not a TCP or UDP socket (errno ${value})` : null,
      claimed: false,
    });
  }
  return out;
}

/** systemd passed this process sockets (then `workers` > 1 is refused: each worker binds its own). */
export function activatedCount(): number {
  return activated.length;
}

/** The socket systemd passed for listener `name` (claimed once), or undefined: bind as usual. */
export function activatedSocket(kind: SocketKind, name: string): BoundSocket | undefined {
  const hit = activated.find((a) => !a.claimed && a.name === name && a.kind === kind);
  if (hit === undefined) return undefined;
  hit.claimed = true;
  return { fd: hit.fd, port: hit.port };
}

/**
 * What systemd passed that no listener took (a name no listener has, the wrong kind, unusable):
 * a line each, for the log. Left open: it is systemd's socket as much as ours.
 */
export function unclaimedActivated(): string[] {
  return activated
    .filter((a) => !a.claimed)
    .map(
      (a) =>
        `fd ${a.fd} "${a.name}"${a.kind === null ? '' : ` (${a.kind === 'tcp' ? 'stream' : 'datagram'}, port ${a.port})`}: ${a.unusable ?? 'no listener of that name and kind'}`,
    );
}
