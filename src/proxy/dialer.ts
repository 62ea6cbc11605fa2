/**
 * How an entry (SOCKS5, HTTP proxy, forward) or the relay reaches a destination. `Dialer` is the
 * seam: the relay and the `socks5`/`http_proxy` listeners dial directly (`DirectDialer`, allow
 * list enforced), the tunnel agent dials through the tunnel. Failures carry a SOCKS5 reply status
 * (`openStatus`), which is also the MS protocol's OPEN_ACK status.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { formatHostPort } from '../config/units.js';
import { type ErrorCode, ZiplineError } from '../errors.js';
import { type Destination, formatDestination } from '../tunnel/address.js';
import type { AllowList } from '../tunnel/allow-list.js';
import { OPEN_STATUS } from '../tunnel/constants.js';
import { destinationResolver } from './name-resolver.js';

export type DialError = ZiplineError & { openStatus: number };

export function dialError(code: ErrorCode, status: number, message: string): DialError {
  return Object.assign(new ZiplineError(code, message), { openStatus: status });
}

/** The OPEN_ACK / SOCKS5 status of any dial failure. */
export function statusOf(err: unknown): number {
  const s = (err as { openStatus?: unknown }).openStatus;
  return typeof s === 'number' ? s : OPEN_STATUS.FAILURE;
}

/** A UDP path to many destinations (a SOCKS5 UDP association, a UDP forward). */
export interface UdpChannel {
  send(dest: Destination, data: Buffer): void;
  onMessage(cb: (from: Destination, data: Buffer) => void): void;
  /** Runs once when the channel ends (either side). */
  onClose(cb: () => void): void;
  close(): void;
}

export interface Dialer {
  connectTcp(dest: Destination): Promise<Duplex & { reset?: boolean }>;
  openUdp(first: Destination): Promise<UdpChannel>;
}

/** A SOCKS5 reply / OPEN_ACK status as the HTTP-style status of access lines. */
export function httpStatusOfReply(reply: number): number {
  if (reply === OPEN_STATUS.OK) return 200;
  if (reply === OPEN_STATUS.NOT_ALLOWED) return 403;
  if (reply === OPEN_STATUS.TIMEOUT) return 504;
  if (reply === 7 || reply === 8) return 400;
  return 502;
}

/** errno → SOCKS5 reply (RFC 1928 §6). */
export function statusOfErrno(code: string | undefined): number {
  switch (code) {
    case 'ECONNREFUSED':
      return OPEN_STATUS.REFUSED;
    case 'ENETUNREACH':
      return OPEN_STATUS.NETWORK_UNREACHABLE;
    case 'EHOSTUNREACH':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_NONAME':
    case 'EAI_NODATA':
      return OPEN_STATUS.HOST_UNREACHABLE;
    case 'ETIMEDOUT':
      return OPEN_STATUS.TIMEOUT;
    default:
      return OPEN_STATUS.FAILURE;
  }
}

export interface DirectDialerOptions {
  readonly allow: AllowList;
  readonly connectTimeoutMs: number;
}

export class DirectDialer {
  constructor(private opts: DirectDialerOptions) {}

  update(opts: DirectDialerOptions): void {
    this.opts = opts;
  }

  /**
   * The dialer one client uses: `client` (a relay's agent, a proxy client's address) is whose
   * share of name lookups its destinations take (src/proxy/name-resolver.ts).
   */
  forClient(client: string): Dialer {
    return {
      connectTcp: (dest) => this.connectTcp(dest, client),
      openUdp: async () => this.openUdp(client),
    };
  }

  openUdp(client: string): UdpChannel {
    return new DirectUdpChannel(this, client);
  }

  /**
   * The address to use for `dest` once it passes the allow list: names are resolved here and the
   * checked address is what gets dialed.
   */
  async check(dest: Destination, client: string): Promise<string> {
    const { allow } = this.opts;
    if (isIP(dest.host) !== 0) {
      if (!allow.allowsAddress(dest.host, dest.port)) throw notAllowed(dest);
      return dest.host;
    }
    const byName = allow.allowsName(dest.host, dest.port);
    if (!byName && !allow.hasAddressRules) throw notAllowed(dest);
    let address: string;
    try {
      address = await destinationResolver.resolve(dest.host, client, this.opts.connectTimeoutMs);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EBUSY') {
        throw dialError(
          'ZL_DNS_BUSY',
          OPEN_STATUS.FAILURE,
          `${dest.host} not looked up: ${(err as Error).message}`,
        );
      }
      throw dialError(
        'ZL_TUNNEL_DIAL_FAILED',
        code === 'ETIMEDOUT' ? OPEN_STATUS.TIMEOUT : OPEN_STATUS.HOST_UNREACHABLE,
        `cannot resolve ${dest.host}: ${code ?? (err as Error).message}`,
      );
    }
    if (!byName && !allow.allowsAddress(address, dest.port)) throw notAllowed(dest);
    return address;
  }

  async connectTcp(dest: Destination, client: string): Promise<Socket> {
    const address = await this.check(dest, client);
    return new Promise((resolve, reject) => {
      const socket = connect({ host: address, port: dest.port, allowHalfOpen: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(
          dialError(
            'ZL_TUNNEL_DIAL_FAILED',
            OPEN_STATUS.TIMEOUT,
            `connect to ${formatHostPort(address, dest.port)} timed out`,
          ),
        );
      }, this.opts.connectTimeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        socket.destroy();
        reject(
          dialError(
            'ZL_TUNNEL_DIAL_FAILED',
            statusOfErrno(err.code),
            `connect to ${formatHostPort(address, dest.port)}: ${err.code ?? err.message}`,
          ),
        );
      });
    });
  }
}

function notAllowed(dest: Destination): DialError {
  return dialError(
    'ZL_TUNNEL_NOT_ALLOWED',
    OPEN_STATUS.NOT_ALLOWED,
    `${formatDestination(dest)} is not on the allow list`,
  );
}

/**
 * UDP to allowed destinations from one local socket per family. Datagrams to names wait for the
 * (cached, 30 s) resolution; datagrams that fail the allow list are dropped and counted.
 */
class DirectUdpChannel implements UdpChannel {
  private v4: UdpSocket | null = null;
  private v6: UdpSocket | null = null;
  private readonly names = new Map<string, { address: string; at: number }>();
  private messageCb: (from: Destination, data: Buffer) => void = () => {};
  private readonly closeCbs: (() => void)[] = [];
  private closed = false;
  dropped = 0;

  constructor(
    private readonly dialer: DirectDialer,
    private readonly client: string,
  ) {}

  send(dest: Destination, data: Buffer): void {
    if (this.closed) return;
    const cached = this.names.get(dest.host);
    if (cached !== undefined && Date.now() - cached.at < 30_000) {
      this.sendTo(cached.address, dest.port, data);
      return;
    }
    this.dialer.check(dest, this.client).then(
      (address) => {
        if (isIP(dest.host) === 0) {
          if (this.names.size >= 1024) this.names.clear();
          this.names.set(dest.host, { address, at: Date.now() });
        }
        this.sendTo(address, dest.port, data);
      },
      () => {
        this.dropped++;
      },
    );
  }

  private sendTo(address: string, port: number, data: Buffer): void {
    if (this.closed) return;
    const sock = this.socketFor(isIP(address) === 6 ? 6 : 4);
    sock.send(data, port, address, (err) => {
      if (err) this.dropped++;
    });
  }

  private socketFor(family: 4 | 6): UdpSocket {
    const existing = family === 4 ? this.v4 : this.v6;
    if (existing !== null) return existing;
    const sock = createSocket(family === 4 ? 'udp4' : 'udp6');
    sock.on('message', (msg, rinfo) => this.messageCb({ host: rinfo.address, port: rinfo.port }, msg));
    sock.on('error', () => this.close());
    if (family === 4) this.v4 = sock;
    else this.v6 = sock;
    return sock;
  }

  onMessage(cb: (from: Destination, data: Buffer) => void): void {
    this.messageCb = cb;
  }

  onClose(cb: () => void): void {
    this.closeCbs.push(cb);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.v4?.close();
    this.v6?.close();
    for (const cb of this.closeCbs.splice(0)) cb();
  }
}
