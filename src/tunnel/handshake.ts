/**
 * HELLO and HELLO_ACK payloads (src/tunnel/SPEC.md, "Payload layouts") and the agent's proof of
 * its token. The proof is HMAC-SHA256(token, context ‖ channel binding ‖ HELLO fields): over TLS
 * the channel binding is the connection's exported keying material (RFC 5705/8446 exporter,
 * label `EXPORTER-zipline-tunnel-v1`), so a proof cannot be replayed on another connection; over
 * plain TCP it is 32 zero bytes and the relay accepts a (timestamp, nonce) pair once within ±5 min.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { PROTOCOL_VERSION } from './constants.js';

export const CODEC = { ZSTD: 0x01 } as const;
export const EXPORTER_LABEL = 'EXPORTER-zipline-tunnel-v1';
const PROOF_CONTEXT = Buffer.from('zipline tunnel hello v1\0');
export const PROOF_SIZE = 32;
/** version 1 + session id 16 + codecs 1 + max payload 4 + windows 4 + 4 + load 4 + 4 + 2 */
export const HELLO_ACK_SIZE = 40;
export const NONCE_SIZE = 16;
/** A plain-TCP HELLO older or newer than this is refused. */
export const CLOCK_SKEW_MS = 5 * 60_000;

export interface Hello {
  readonly version: number;
  readonly agentId: string;
  /** Codecs the agent can decode (bit mask of CODEC). */
  readonly codecs: number;
  /** Codecs the agent asks to use (it compresses what it sends; the relay does the same). */
  readonly want: number;
  readonly maxPayload: number;
  readonly initialWindow: number;
  readonly connectionWindow: number;
  readonly timestampMs: number;
  readonly nonce: Buffer;
  readonly proof: Buffer;
}

export interface HelloAck {
  readonly version: number;
  readonly sessionId: Buffer;
  /** Codecs both sides use. */
  readonly codecs: number;
  readonly maxPayload: number;
  readonly initialWindow: number;
  readonly connectionWindow: number;
  /** Relay load: sessions, streams, and its event-loop utilisation in ‰. */
  readonly sessions: number;
  readonly streams: number;
  readonly loadPermille: number;
}

/** 32 bytes binding the proof to this TLS connection (zero bytes over plain TCP). */
export function channelBinding(socket: unknown): Buffer {
  const tls = socket as Partial<TLSSocket>;
  if (typeof tls.exportKeyingMaterial === 'function' && tls.encrypted === true) {
    return tls.exportKeyingMaterial(32, EXPORTER_LABEL, Buffer.alloc(0));
  }
  return Buffer.alloc(32);
}

function helloFields(h: Omit<Hello, 'proof'>): Buffer {
  const id = Buffer.from(h.agentId, 'utf8');
  const out = Buffer.alloc(1 + 1 + id.length + 1 + 1 + 4 + 4 + 4 + 8 + NONCE_SIZE);
  let o = 0;
  out[o++] = h.version;
  out[o++] = id.length;
  o += id.copy(out, o);
  out[o++] = h.codecs;
  out[o++] = h.want;
  out.writeUInt32BE(h.maxPayload, o);
  out.writeUInt32BE(h.initialWindow, o + 4);
  out.writeUInt32BE(h.connectionWindow, o + 8);
  out.writeBigUInt64BE(BigInt(h.timestampMs), o + 12);
  h.nonce.copy(out, o + 20);
  return out;
}

export function computeProof(token: string, binding: Buffer, fields: Buffer): Buffer {
  return createHmac('sha256', token).update(PROOF_CONTEXT).update(binding).update(fields).digest();
}

export function encodeHello(
  h: Omit<Hello, 'proof' | 'nonce' | 'timestampMs' | 'version'>,
  token: string,
  binding: Buffer,
): Buffer {
  const fields = helloFields({
    ...h,
    version: PROTOCOL_VERSION,
    timestampMs: Date.now(),
    nonce: randomBytes(NONCE_SIZE),
  });
  return Buffer.concat([fields, computeProof(token, binding, fields)]);
}

/** Parses a HELLO payload; null when malformed. */
export function decodeHello(p: Buffer): (Hello & { fields: Buffer }) | null {
  if (p.length < 2) return null;
  const idLen = p[1] as number;
  const fixed = 1 + 1 + idLen + 1 + 1 + 4 + 4 + 4 + 8 + NONCE_SIZE;
  if (idLen === 0 || p.length !== fixed + PROOF_SIZE) return null;
  const agentId = p.toString('utf8', 2, 2 + idLen);
  if (!/^[A-Za-z0-9._:@-]{1,128}$/.test(agentId)) return null;
  let o = 2 + idLen;
  const codecs = p[o++] as number;
  const want = p[o++] as number;
  return {
    version: p[0] as number,
    agentId,
    codecs,
    want,
    maxPayload: p.readUInt32BE(o),
    initialWindow: p.readUInt32BE(o + 4),
    connectionWindow: p.readUInt32BE(o + 8),
    timestampMs: Number(p.readBigUInt64BE(o + 12)),
    nonce: p.subarray(o + 20, o + 20 + NONCE_SIZE),
    fields: p.subarray(0, fixed),
    proof: p.subarray(fixed),
  };
}

/**
 * Which configured token (if any) made `hello`'s proof. Every token is tried, always, and each
 * comparison is constant-time, so timing says nothing about which one (or how much of it) matched.
 */
export function verifyProof(
  tokens: readonly string[],
  binding: Buffer,
  hello: Hello & { fields: Buffer },
): boolean {
  let ok = false;
  for (const t of tokens) {
    const expected = computeProof(t, binding, hello.fields);
    if (timingSafeEqual(expected, hello.proof)) ok = true;
  }
  return ok;
}

export function encodeHelloAck(a: Omit<HelloAck, 'version'>): Buffer {
  const out = Buffer.alloc(HELLO_ACK_SIZE);
  out[0] = PROTOCOL_VERSION;
  a.sessionId.copy(out, 1, 0, 16);
  out[17] = a.codecs;
  out.writeUInt32BE(a.maxPayload, 18);
  out.writeUInt32BE(a.initialWindow, 22);
  out.writeUInt32BE(a.connectionWindow, 26);
  out.writeUInt32BE(a.sessions, 30);
  out.writeUInt32BE(a.streams, 34);
  out.writeUInt16BE(Math.min(1000, Math.max(0, Math.round(a.loadPermille))), 38);
  return out;
}

export function decodeHelloAck(p: Buffer): HelloAck | null {
  if (p.length < HELLO_ACK_SIZE) return null;
  return {
    version: p[0] as number,
    sessionId: Buffer.from(p.subarray(1, 17)),
    codecs: p[17] as number,
    maxPayload: p.readUInt32BE(18),
    initialWindow: p.readUInt32BE(22),
    connectionWindow: p.readUInt32BE(26),
    sessions: p.readUInt32BE(30),
    streams: p.readUInt32BE(34),
    loadPermille: p.readUInt16BE(38),
  };
}

/**
 * Plain-TCP replay guard: each (timestamp, nonce) is accepted once while it is within the skew
 * window; the set forgets entries older than that (bounded by the failed-auth limiter upstream).
 */
export class NonceCache {
  private readonly seen = new Map<string, number>();

  accept(timestampMs: number, nonce: Buffer, now = Date.now()): boolean {
    if (Math.abs(now - timestampMs) > CLOCK_SKEW_MS) return false;
    for (const [k, t] of this.seen) {
      if (now - t <= CLOCK_SKEW_MS) break; // insertion order ≈ time order
      this.seen.delete(k);
    }
    const key = nonce.toString('hex');
    if (this.seen.has(key)) return false;
    this.seen.set(key, now);
    return true;
  }
}

/**
 * Failed authentications per source address: after `limit` failures within `windowMs`, further
 * connections from that address are closed at once until the window has passed.
 */
export class AuthLimiter {
  private readonly failures = new Map<string, { count: number; since: number }>();

  constructor(
    private readonly limit = 5,
    private readonly windowMs = 60_000,
  ) {}

  blocked(source: string, now = Date.now()): boolean {
    const f = this.failures.get(source);
    if (f === undefined) return false;
    if (now - f.since > this.windowMs) {
      this.failures.delete(source);
      return false;
    }
    return f.count >= this.limit;
  }

  fail(source: string, now = Date.now()): void {
    const f = this.failures.get(source);
    if (f === undefined || now - f.since > this.windowMs) {
      if (this.failures.size >= 100_000) this.prune(now);
      this.failures.set(source, { count: 1, since: now });
    } else f.count++;
  }

  private prune(now: number): void {
    for (const [k, f] of this.failures) if (now - f.since > this.windowMs) this.failures.delete(k);
    // still full of live entries (a spray from many addresses): forget the oldest half
    if (this.failures.size >= 100_000) {
      let n = this.failures.size / 2;
      for (const k of this.failures.keys()) {
        if (n-- <= 0) break;
        this.failures.delete(k);
      }
    }
  }
}
