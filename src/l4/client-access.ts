/**
 * Per-client rules of a listener. `listeners[].clients`: which client addresses it serves (nginx
 * `allow`/`deny`, HAProxy `tcp-request connection reject`, Envoy's network RBAC): `deny` wins; a
 * non-empty `allow` refuses everyone it does not name. `limits.max_connections_per_client`: open
 * connections per client address. Checked once per connection (`clients`: once per UDP session)
 * on the client's address — the PROXY protocol header's when the listener reads one — before
 * anything else is done for it (no TLS handshake, no byte read, no server picked). A refused TCP
 * connection is closed without a reply; a refused datagram is dropped. Both are counted
 * (`ZL_CLIENT_DENIED`, `ZL_CLIENT_CONNECTION_LIMIT`) and logged at debug (a scanner must not
 * fill the log).
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

/**
 * Whether a listener with `access` serves the client at `ip`. An unknown address ('': the client
 * reset the connection before its address was read, when the kernel no longer names the peer,
 * though the bytes it sent can still be read) is refused whenever there are rules: a denied client
 * must not get its bytes through by resetting at once.
 */
export function clientAllowed(access: ClientAccess | null, ip: string): boolean {
  if (access === null) return true;
  if (ip === '') return false;
  if (access.deny !== null && listed(access.deny, ip)) return false;
  return access.allow === null || listed(access.allow, ip);
}

/**
 * A listener's check of each new connection's client: `clients` (allow/deny) and
 * `limits.max_connections_per_client` (nginx `limit_conn`, HAProxy `sc_conn_cur`). The counts of
 * open connections per client address belong to the listener (they outlive a reload); the
 * settings are read at each call. Refusals are counted, logged at debug, and the socket destroyed.
 */
export class ClientGate {
  private readonly open = new Map<string, number>();

  constructor(
    private readonly listener: string,
    private readonly log: Logger,
  ) {}

  /**
   * Whether the listener may go on with `socket` (its client: the PROXY header's address if one
   * was read). `maxPerClient` 0: no cap, and nothing is counted.
   */
  admit(socket: Socket, access: ClientAccess | null, maxPerClient: number): boolean {
    if (access === null && maxPerClient === 0) return true;
    const ip = clientAddressOf(socket).ip;
    if (!clientAllowed(access, ip)) return this.refuse(socket, ip, 'ZL_CLIENT_DENIED');
    if (maxPerClient === 0) return true;
    const n = this.open.get(ip) ?? 0;
    if (n >= maxPerClient) return this.refuse(socket, ip, 'ZL_CLIENT_CONNECTION_LIMIT');
    this.open.set(ip, n + 1);
    socket.once('close', () => this.release(ip));
    return true;
  }

  private release(ip: string): void {
    const n = (this.open.get(ip) ?? 1) - 1;
    if (n <= 0) this.open.delete(ip);
    else this.open.set(ip, n);
  }

  private refuse(socket: Socket, ip: string, code: 'ZL_CLIENT_DENIED' | 'ZL_CLIENT_CONNECTION_LIMIT'): false {
    metrics.downstreamRejected.labels(this.listener, code).inc();
    this.log.debug({ listener: this.listener, client_ip: ip, code }, 'client connection refused');
    socket.destroy();
    return false;
  }
}
