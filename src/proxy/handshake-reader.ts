/**
 * Reads a small handshake (a SOCKS5 greeting, an HTTP proxy request head) off a socket before
 * the data phase, under a deadline. Bytes beyond what the parser took are handed back, so early
 * data after the handshake is never lost. Not a hot path: chunks are concatenated.
 */
import type { Socket } from 'node:net';
import { LINGERING_TIMEOUT_MS, lingeringClose } from '../l4/lingering-close.js';

export type ParseStep<T> = { need: true } | { done: T; used: number };

/** How long a refused entry client is waited for: `client_header` when shorter (0: no limit). */
export function lingerFor(opts: { readonly headerTimeoutMs: number }): number {
  return opts.headerTimeoutMs > 0
    ? Math.min(opts.headerTimeoutMs, LINGERING_TIMEOUT_MS)
    : LINGERING_TIMEOUT_MS;
}

export class HandshakeReader {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private ended = false;

  constructor(
    private readonly socket: Socket,
    private readonly maxBytes: number,
  ) {
    socket.on('data', this.onData);
    socket.once('end', this.onEnd);
    socket.once('close', this.onEnd);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    if (this.buf.length > this.maxBytes) this.socket.pause();
    this.waiter?.();
  };

  private readonly onEnd = (): void => {
    this.ended = true;
    this.waiter?.();
  };

  /** Runs `parse` on what has arrived until it completes; rejects on EOF or oversize. */
  async read<T>(parse: (buf: Buffer) => ParseStep<T>): Promise<T> {
    for (;;) {
      const step = parse(this.buf);
      if (!('need' in step)) {
        this.buf = this.buf.subarray(step.used);
        return step.done;
      }
      if (this.buf.length > this.maxBytes) throw new Error('handshake too large');
      if (this.ended) throw new Error('the peer closed the connection during the handshake');
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
      this.waiter = null;
    }
  }

  /**
   * Stops reading (the socket is paused until its next consumer, e.g. a pipe, resumes it);
   * returns what arrived beyond the handshake, to forward first.
   */
  detach(): Buffer {
    this.socket.pause();
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }

  /** Refuses the client: `answer`, then its lingering close for at most `lingerMs`. */
  refuse(answer: Buffer | string, lingerMs: number): void {
    this.detach();
    if (!this.socket.destroyed) lingeringClose(this.socket, answer, lingerMs);
  }
}
