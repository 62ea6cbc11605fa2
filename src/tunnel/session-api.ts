/**
 * What the relay and the agent use of a tunnel session, whichever runs it: `TunnelSession`
 * (session.ts: frames, windows and streams in JavaScript, on any platform) or `NativeSession`
 * (native/native-session.ts: the same protocol on the native engine's thread, Linux). Both
 * follow src/tunnel/SPEC.md; the relay and agent code above them is the same either way.
 *
 * Events: 'frame' (type, flags, id, payload) for HELLO, HELLO_ACK, REQUEST, RESPONSE, DATAGRAM;
 * 'stream' (stream, OpenRequest) for a peer OPEN; 'refused' (id); 'goaway' (code, retryAfterMs);
 * 'fatal' (code, reason); 'rtt' (ms); 'close' (once).
 */
import type { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import type { TunnelErrorCode } from './constants.js';
import type { FrameCounts } from './frame-counts.js';

/** Labels for access lines and /stats. */
export interface StreamInfo {
  kind?: number;
  dest?: string;
  relay?: string;
  openedAt?: number;
}

/** One stream, as a Duplex. `reset` is true once it ended abortively (RST either way). */
export interface SessionStream extends Duplex {
  readonly id: number;
  info: StreamInfo;
  reset: boolean;
  /** The code of the peer's RST, when it reset the stream. */
  readonly peerResetCode: number | null;
}

export interface OpenRequest {
  readonly kind: number;
  /** The OPEN payload after the kind byte: address type, address, port (SOCKS5 encoding). */
  readonly address: Buffer;
}

export interface PeerSettings {
  readonly maxPayload: number;
  readonly initialWindow: number;
  readonly connectionWindow: number;
}

export interface SessionApi extends EventEmitter {
  readonly streams: ReadonlyMap<number, SessionStream>;
  readonly pingIntervalMs: number;
  /** The data path: 'js' or 'native' (for /stats and logs). */
  readonly engine: 'js' | 'native';
  rttMs: number;
  readonly closed: boolean;
  readonly goneAway: boolean;
  readonly closingDown: boolean;
  /** zstd on DATA (set from HELLO/HELLO_ACK before `setPeer`). */
  compression: boolean;
  /** Whether this session can run zstd at all (what HELLO may offer). */
  readonly codecAvailable: boolean;
  readonly frames: FrameCounts;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly compressIn: number;
  readonly compressOut: number;
  readonly datagramsDropped: number;
  readonly streamsOpened: number;
  readonly openedAt: number;
  /** 32 bytes binding a HELLO proof to this connection (TLS exporter; zeros on plain TCP). */
  binding(): Buffer;
  open(kind: number, address: Buffer): Promise<SessionStream>;
  answer(stream: SessionStream, status: number): void;
  setPeer(peer: PeerSettings): void;
  sendControl(type: number, flags: number, id: number, payload: Buffer | null): void;
  sendDatagram(id: number, payload: Buffer): boolean;
  ping(): void;
  goAway(code?: TunnelErrorCode, retryAfterMs?: number): void;
  fatal(code: TunnelErrorCode, reason: string): void;
  close(): void;
  destroy(): void;
  flushFrameMetrics(): void;
}
