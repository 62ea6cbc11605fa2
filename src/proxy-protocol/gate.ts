/**
 * A listener's PROXY protocol gate (`listeners[].proxy_protocol`): connections from the listed
 * peers have their header read (reader.ts) before the listener takes them; every other
 * connection passes at once. Refusals are counted in `zipline_connection_errors_total` and
 * logged at debug (a scanner must not fill the log). Connections still sending their header
 * are closed with the listener's others on drain.
 */
import type { Socket } from 'node:net';
import type { Server as TlsServer } from 'node:tls';
import { listed } from '../config/address-list.js';
import type { Logger } from '../log/logger.js';
import { metrics } from '../metrics/catalog.js';
import { type HeaderCallbacks, ProxyHeaderReader } from './reader.js';
import type { ProxyProtocolSettings } from './settings.js';

/** What to do with a connection once its header is in: `rest` came after it (valid during the call). */
export type AfterHeader = (socket: Socket, rest: Buffer) => void;

export class ProxyGate {
  private readonly pending = new Set<Socket>();

  constructor(
    private readonly listener: string,
    private readonly log: Logger,
    /** The listener's current settings (a reload may change them). */
    private readonly settings: () => ProxyProtocolSettings | null,
  ) {}

  /** Whether `socket` comes from a `proxy_protocol.from` peer (and must send a header). */
  applies(socket: Socket): boolean {
    const pp = this.settings();
    return pp !== null && listed(pp.from, socket.remoteAddress ?? '');
  }

  /**
   * Reads `socket`'s header, then calls `then`. `sharedReads`: the socket's reads are delivered by
   * its owner to the returned reader's `onBytes` (an `onread` socket).
   */
  read(socket: Socket, sharedReads: boolean, then: AfterHeader): ProxyHeaderReader {
    const pp = this.settings() as ProxyProtocolSettings;
    this.pending.add(socket);
    const callbacks: HeaderCallbacks = {
      onHeader: (s, rest) => {
        this.pending.delete(s);
        then(s, rest);
      },
      onRejected: (s, code, reason) => {
        this.pending.delete(s);
        metrics.connectionErrors.labels(this.listener, code).inc();
        this.log.debug(
          { listener: this.listener, client_ip: s.remoteAddress, code, reason },
          'PROXY header refused',
        );
      },
    };
    socket.once('close', () => this.pending.delete(socket));
    return new ProxyHeaderReader(socket, pp.timeoutMs, callbacks, sharedReads);
  }

  /**
   * https: the header comes before the TLS handshake. Every accept path hands a TLS server its
   * connections by emitting 'connection', so its own handler is put behind the gate; what came
   * after the header is put back for the handshake (a TLSSocket takes what its socket buffered).
   */
  beforeTls(tls: TlsServer): void {
    const handshake = tls.listeners('connection')[0] as ((socket: Socket) => void) | undefined;
    if (handshake === undefined) return;
    tls.removeListener('connection', handshake);
    tls.on('connection', (socket: Socket) => {
      if (!this.applies(socket)) return handshake.call(tls, socket);
      this.read(socket, false, (s, rest) => {
        if (rest.length > 0) s.unshift(Buffer.from(rest));
        handshake.call(tls, s);
      });
    });
  }

  /** Drain: connections still sending their header are closed. */
  destroyAll(): void {
    for (const s of this.pending) s.destroy();
  }
}
