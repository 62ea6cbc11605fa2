/**
 * One agent's session on the relay: streams the agent opens are dialed through the relay's
 * `DirectDialer` (allow list, connect timeout) and answered with OPEN_ACK; TCP streams are piped
 * to their socket, UDP streams become associations fed by DATAGRAM frames. Nothing but HELLO is
 * accepted before the agent has authenticated.
 */
import { isZiplineError } from '../errors.js';
import { isoNow } from '../log/access-line.js';
import { httpStatusOfReply, statusOf, type UdpChannel } from '../proxy/dialer.js';
import { pipeStream } from '../proxy/pipe.js';
import { addressLength, formatDestination, readAddress, writeAddress } from './address.js';
import { ERROR, FRAME, OPEN_KIND, OPEN_STATUS } from './constants.js';
import type { TunnelRelay } from './relay.js';
import type { OpenRequest, SessionApi, SessionStream } from './session-api.js';

export class RelaySession {
  authenticated = false;
  agentId = '';
  sessionId: Buffer = Buffer.alloc(16);
  /** Told GOAWAY SHUTTING_DOWN (`drain`). */
  private drained = false;
  private readonly udp = new Map<number, UdpChannel>();
  /** Per UDP association: counts a datagram toward the agent's side and refreshes its idle timer. */
  private readonly udpIn = new Map<number, (n: number) => void>();
  streamsRefused = 0;

  constructor(
    private readonly relay: TunnelRelay,
    readonly session: SessionApi,
    readonly source: string,
  ) {
    this.session.on('stream', (s: SessionStream, req: OpenRequest) => this.onOpen(s, req));
    this.session.on('frame', (type: number, _f: number, id: number, payload: Buffer) => {
      if (!this.authenticated) {
        if (type !== FRAME.HELLO) this.session.fatal(ERROR.PROTOCOL_ERROR, 'a frame before HELLO');
        return;
      }
      if (type === FRAME.DATAGRAM) this.onDatagram(id, payload);
      else if (type === FRAME.REQUEST) this.onRequest(payload);
    });
    this.session.on('refused', () => {
      this.streamsRefused++;
    });
    this.session.once('close', () => {
      for (const ch of this.udp.values()) ch.close();
      this.udp.clear();
      relay.forget(this);
    });
  }

  authenticate(agentId: string, sessionId: Buffer): void {
    this.authenticated = true;
    this.agentId = agentId;
    this.sessionId = sessionId;
  }

  /** Whose share of name lookups this session's destinations take: its agent's. */
  private client(): string {
    return `agent:${this.agentId}`;
  }

  /**
   * GOAWAY SHUTTING_DOWN; the connection closes when the last stream does. `retryAfterMs`: when
   * the agent may come back (0 at an upgrade: a new process serves this address already).
   */
  drain(retryAfterMs = 1000): void {
    if (this.drained) return;
    this.drained = true;
    this.session.goAway(ERROR.SHUTTING_DOWN, retryAfterMs);
    const closeWhenIdle = (): void => {
      if (this.session.streams.size === 0) this.session.close();
    };
    closeWhenIdle();
    for (const s of this.session.streams.values()) s.once('close', () => setImmediate(closeWhenIdle));
  }

  private onOpen(stream: SessionStream, req: OpenRequest): void {
    if (!this.authenticated) {
      this.session.fatal(ERROR.PROTOCOL_ERROR, 'OPEN before HELLO');
      return;
    }
    const parsed = readAddress(req.address, 0);
    if (parsed === null || (req.kind !== OPEN_KIND.TCP && req.kind !== OPEN_KIND.UDP)) {
      this.session.answer(stream, OPEN_STATUS.FAILURE);
      return;
    }
    const dest = parsed.dest;
    const started = Date.now();
    stream.info = { kind: req.kind, dest: formatDestination(dest), openedAt: started };
    if (req.kind === OPEN_KIND.UDP) {
      this.openUdp(stream);
      return;
    }
    this.relay.dialer.connectTcp(dest, this.client()).then(
      (socket) => {
        if (stream.destroyed) {
          socket.destroy();
          this.log(stream, OPEN_STATUS.OK, 0, 0, 'ZL_TUNNEL_RESET');
          return;
        }
        this.session.answer(stream, OPEN_STATUS.OK);
        pipeStream(stream, socket, this.relay.cfg.idle_timeout, (r) =>
          this.log(stream, OPEN_STATUS.OK, r.toSocket, r.fromSocket, r.error),
        );
      },
      (err) => {
        const status = statusOf(err);
        if (!stream.destroyed) this.session.answer(stream, status);
        this.log(stream, status, 0, 0, isZiplineError(err) ? err.code : 'ZL_TUNNEL_DIAL_FAILED');
      },
    );
  }

  /** A UDP association: datagrams go where each DATAGRAM says (allow list checked per datagram). */
  private openUdp(stream: SessionStream): void {
    const ch = this.relay.dialer.openUdp(this.client());
    if (stream.destroyed || this.session.closed) {
      ch.close();
      return;
    }
    this.udp.set(stream.id, ch);
    let bytesIn = 0;
    let bytesOut = 0;
    let idle: NodeJS.Timeout | null = null;
    const touch = (): void => {
      idle?.refresh();
    };
    idle = setTimeout(() => stream.destroy(), this.relay.cfg.udp_idle_timeout);
    idle.unref();
    ch.onMessage((from, data) => {
      touch();
      const p = Buffer.allocUnsafe(addressLength(from) + data.length);
      const at = writeAddress(p, 0, from);
      data.copy(p, at);
      bytesOut += data.length;
      this.session.sendDatagram(stream.id, p);
    });
    stream.on('data', () => {}); // a UDP stream carries no bytes; FIN or RST ends it
    stream.on('end', () => stream.destroy());
    stream.on('error', () => {});
    stream.once('close', () => {
      if (idle !== null) clearTimeout(idle);
      this.udp.delete(stream.id);
      this.udpIn.delete(stream.id);
      ch.close();
      this.log(stream, OPEN_STATUS.OK, bytesIn, bytesOut, null);
    });
    this.udpIn.set(stream.id, (n) => {
      bytesIn += n;
      touch();
    });
    this.session.answer(stream, OPEN_STATUS.OK);
  }

  private onDatagram(id: number, payload: Buffer): void {
    const ch = this.udp.get(id);
    if (ch === undefined) return;
    const a = readAddress(payload, 0);
    if (a === null) return;
    const data = payload.subarray(a.end);
    this.udpIn.get(id)?.(data.length);
    ch.send(a.dest, data);
  }

  /** REQUEST: u32 id + UTF-8 method. `load` answers the relay's load figures (JSON). */
  private onRequest(payload: Buffer): void {
    if (payload.length < 4) return;
    const id = payload.readUInt32BE(0);
    const method = payload.toString('utf8', 4);
    const out = (status: number, body: unknown): void => {
      const json = Buffer.from(JSON.stringify(body));
      const p = Buffer.allocUnsafe(5 + json.length);
      p.writeUInt32BE(id, 0);
      p[4] = status;
      json.copy(p, 5);
      this.session.sendControl(FRAME.RESPONSE, 0, 0, p);
    };
    if (method === 'load') {
      out(0, {
        sessions: this.relay.sessions.size,
        streams: this.relay.streamCount(),
        load_permille: this.relay.load,
      });
    } else out(1, { error: `unknown request "${method.slice(0, 64)}"` });
  }

  private log(
    stream: SessionStream,
    status: number,
    bytesIn: number,
    bytesOut: number,
    error: string | null,
  ): void {
    const openedAt = stream.info.openedAt ?? Date.now();
    this.relay.logStream({
      time: isoNow(),
      listener: 'tunnel.relay',
      protocol: stream.info.kind === OPEN_KIND.UDP ? 'tunnel-udp' : 'tunnel-tcp',
      client_ip: this.source,
      agent: this.agentId,
      session: this.sessionId.toString('hex'),
      stream: stream.id,
      method: 'OPEN',
      path: stream.info.dest ?? '',
      status: httpStatusOfReply(status),
      reply: status,
      upstream: null,
      upstream_addr: stream.info.dest ?? null,
      attempts: 1,
      response_time: (Date.now() - openedAt) / 1000,
      bytes_in: bytesIn,
      bytes_out: bytesOut,
      error,
    });
  }

  stats(): Record<string, unknown> {
    const s = this.session;
    return {
      agent: this.agentId,
      session: this.sessionId.toString('hex'),
      source: this.source,
      state: s.closed ? 'closed' : s.closingDown ? 'draining' : 'up',
      rtt_ms: s.rttMs < 0 ? null : Math.round(s.rttMs * 1000) / 1000,
      streams: s.streams.size,
      streams_opened: s.streamsOpened,
      streams_refused: this.streamsRefused,
      bytes_in: s.bytesIn,
      bytes_out: s.bytesOut,
      compression: s.compression ? 'zstd' : 'none',
      engine: s.engine,
      datagrams_dropped: s.datagramsDropped,
      up_s: Math.round((Date.now() - s.openedAt) / 1000),
    };
  }
}
