/**
 * `listeners[].clients`: which client addresses a listener serves (nginx `allow`/`deny`, HAProxy
 * `tcp-request connection reject`, Envoy's network RBAC). `deny` wins; a non-empty `allow` refuses
 * everyone it does not name. Compiled once per (re)load; checked once per connection (a UDP
 * session) on the client's address — the PROXY protocol header's when the listener reads one — and
 * before anything else is done for it (no TLS handshake, no byte read, no server picked).
 * A refused TCP connection is closed without a reply; a refused datagram is dropped. Both are
 * counted with `ZL_CLIENT_DENIED` and logged at debug (a scanner must not fill the log).
 */
import type { BlockList, Socket } from 'node:net';
import { addressList, listed } from '../config/address-list.js';
import type { Logger } from '../log/logger.js';
import { metrics } from '../metrics/catalog.js';
import { clientAddressOf } from '../proxy-protocol/reader.js';

export interface ClientAccessConfig {
  readonly allow: readonly string[];
  readonly deny: readonly string[];
}

export interface ClientAccess {
  /** Only these are served (null: everyone not denied). */
  readonly allow: BlockList | null;
  readonly deny: BlockList | null;
}

/** null when the listener serves everyone (no `clients`, or both lists empty). */
export function compileClientAccess(cfg: ClientAccessConfig | undefined): ClientAccess | null {
  if (cfg === undefined || (cfg.allow.length === 0 && cfg.deny.length === 0)) return null;
  return Object.freeze({
    allow: cfg.allow.length > 0 ? addressList(cfg.allow) : null,
    deny: cfg.deny.length > 0 ? addressList(cfg.deny) : null,
  });
}

/** Whether a listener with `access` serves the client at `ip`. */
export function clientAllowed(access: ClientAccess | null, ip: string): boolean {
  if (access === null) return true;
  if (access.deny !== null && listed(access.deny, ip)) return false;
  return access.allow === null || listed(access.allow, ip);
}

/**
 * Checks a new connection's client (the PROXY header's address if one was read); a refused one
 * is counted, logged at debug and destroyed. Returns whether the listener may go on with it.
 */
export function admitConnection(
  access: ClientAccess | null,
  socket: Socket,
  listener: string,
  log: Logger,
): boolean {
  if (access === null) return true;
  const ip = clientAddressOf(socket).ip;
  if (clientAllowed(access, ip)) return true;
  metrics.downstreamRejected.labels(listener, 'ZL_CLIENT_DENIED').inc();
  log.debug({ listener, client_ip: ip, code: 'ZL_CLIENT_DENIED' }, 'client refused by listeners[].clients');
  socket.destroy();
  return false;
}
