/**
 * Reads the PROXY protocol header at the start of a connection from a `proxy_protocol.from`
 * peer, then hands the connection on with the client's address and whatever bytes came after
 * the header in the same reads (a request, a TLS ClientHello). Exactly one of `onHeader` /
 * `onRejected` is called, or neither when the peer goes away first.
 *
 * The header must arrive within the timeout and must parse exactly (header.ts); otherwise the
 * connection is closed without a reply (HAProxy and nginx do the same) and counted under
 * `ZL_PROXY_PROTOCOL` or `ZL_PROXY_PROTOCOL_TIMEOUT`. At most a v2 header's bound (16 KiB) is
 * buffered.
 */
import type { Socket } from 'node:net';
import type { ErrorCode } from '../errors.js';
import { type ProxyAddress, parseProxyHeader, V2_MAX } from './header.js';

const kClientAddress = Symbol('zipline.proxyProtocol.client');
const kLocalAddress = Symbol('zipline.proxyProtocol.local');
type Annotated = Socket & { [kClientAddress]?: ProxyAddress; [kLocalAddress]?: ProxyAddress };

/**
 * The client's address: the one a PROXY header gave for this socket (or for the TCP socket under
 * this TLS one), else the socket's peer (a TLS socket's own, else the one its TCP socket knows:
 * accept4()'s when the native thread accepted it, which outlives a reset; see listen.ts).
 */
export function clientAddressOf(socket: Socket): ProxyAddress {
  const s = socket as Annotated;
  const parent = (s as { _parent?: Annotated | null })._parent;
  const given = s[kClientAddress] ?? parent?.[kClientAddress];
  if (given !== undefined) return given;
  const ip = socket.remoteAddress ?? parent?.remoteAddress;
  if (ip !== undefined) return { ip, port: socket.remotePort ?? parent?.remotePort ?? 0 };
  return { ip: '', port: 0 };
}

/** The address the client connected to: the header's destination, else the socket's own. */
export function localAddressOf(socket: Socket): ProxyAddress {
  const given = (socket as Annotated)[kLocalAddress];
  return given ?? { ip: socket.localAddress ?? '', port: socket.localPort ?? 0 };
}

export interface HeaderCallbacks {
  /** The header was read; `rest` (valid during the call only) came after it. */
  onHeader(socket: Socket, rest: Buffer): void;
  onRejected(socket: Socket, code: ErrorCode, reason: string): void;
}

export class ProxyHeaderReader {
  private buffered: Buffer | null = null;
  private timer: NodeJS.Timeout | null;
  private done = false;
  private readonly onData = (chunk: Buffer): void => this.onBytes(chunk);

  /**
   * `sharedReads`: the socket's reads are delivered to `onBytes` by its owner (an `onread`
   * socket); otherwise this reads the socket with 'data' events and stops it reading (paused,
   * libuv reads stopped) once the header is in.
   */
  constructor(
    private readonly socket: Socket,
    timeoutMs: number,
    private readonly cb: HeaderCallbacks,
    private readonly sharedReads: boolean,
  ) {
    this.timer = setTimeout(onTimeout, timeoutMs, this);
    socket.once('close', () => this.finish());
    socket.on('error', ignore);
    if (!sharedReads) {
      socket.on('data', this.onData);
      socket.resume();
    }
  }

  /** Bytes from the peer (a view valid during the call). */
  onBytes(view: Buffer): void {
    if (this.done) return;
    const prev = this.buffered;
    const buf = prev === null ? view : Buffer.concat([prev, view]);
    const r = parseProxyHeader(buf);
    if (r.kind === 'more') {
      if (buf.length > V2_MAX) this.reject('ZL_PROXY_PROTOCOL', 'header too long');
      // kept past the call: a copy (the view may be a shared read buffer)
      else this.buffered = prev === null ? Buffer.from(view) : buf;
      return;
    }
    if (r.kind === 'error') {
      this.reject('ZL_PROXY_PROTOCOL', r.reason);
      return;
    }
    this.finish();
    const s = this.socket as Annotated;
    if (r.source !== null) s[kClientAddress] = r.source;
    if (r.destination !== null) s[kLocalAddress] = r.destination;
    if (!this.sharedReads) {
      this.socket.removeListener('data', this.onData);
      this.socket.pause();
      // a paused socket still reads into its buffer: stop libuv reading too (the next owner
      // resumes it, or hands the descriptor to the native pump). Anything already buffered
      // stays there for the next reader (not read() here: that would start libuv reading again).
      const handle = (this.socket as unknown as { _handle?: { reading?: boolean; readStop?: () => number } })
        ._handle;
      if (handle?.readStop !== undefined) {
        handle.reading = false;
        handle.readStop();
      }
    }
    this.cb.onHeader(this.socket, buf.subarray(r.length));
  }

  /** @internal the timer */
  expire(): void {
    if (!this.done) this.reject('ZL_PROXY_PROTOCOL_TIMEOUT', 'no header in time');
  }

  private reject(code: ErrorCode, reason: string): void {
    this.finish();
    this.cb.onRejected(this.socket, code, reason);
    this.socket.destroy();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.buffered = null;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}

function onTimeout(reader: ProxyHeaderReader): void {
  reader.expire();
}

function ignore(): void {}
