/**
 * Reads a small handshake (a SOCKS5 greeting, an HTTP proxy request head) off a socket before
 * the data phase, under a deadline. Bytes beyond what the parser took are handed back, so early
 * data after the handshake is never lost. Not a hot path: chunks are concatenated.
 */
import type { Socket } from 'node:net';
import { ERROR_CATALOG, type ErrorCode } from '../errors.js';
import { LINGERING_TIMEOUT_MS, lingeringClose } from '../l4/lingering-close.js';
import { endedByReset } from '../l4/reset-socket.js';
import type { EntryResult } from './entry-server.js';

/**
 * The peer left before the handshake was complete: `ZL_CLIENT_ABORTED` after its FIN,
 * `ZL_CLIENT_RESET` after its RST (an RST that came with the last bytes included, where the addon
 * can tell), or `null` when zipline destroyed the socket (the handshake's deadline, the drain's).
 */
export class HandshakeEnded extends Error {
  constructor(readonly code: 'ZL_CLIENT_ABORTED' | 'ZL_CLIENT_RESET' | null) {
    super('the peer closed the connection during the handshake');
    this.name = 'HandshakeEnded';
  }
}

export type ParseStep<T> = { need: true } | { done: T; used: number };

/**
 * The access line's status and code for a handshake that did not complete (a socks5/http_proxy
 * entry): the client's `client_header` ran out (408), it left (499: FIN or RST), zipline cut it
 * (`drain_timeout`: 503), or what it sent outgrew the handshake's bound (400, as a bad request).
 */
export function handshakeFailure(result: EntryResult, err: unknown, timedOut: boolean): EntryResult {
  let error: ErrorCode = 'ZL_PROXY_BAD_REQUEST';
  if (timedOut) error = 'ZL_HTTP_HEADER_TIMEOUT';
  else if (err instanceof HandshakeEnded) error = err.code ?? 'ZL_DRAIN_TIMEOUT';
  return { ...result, status: ERROR_CATALOG[error].status, error };
}

/** How long a refused entry client is waited for: `client_header` when shorter (0: no limit). */
export function lingerFor(opts: { readonly headerTimeoutMs: number }): number {
  return opts.headerTimeoutMs > 0
    ? Math.min(opts.headerTimeoutMs, LINGERING_TIMEOUT_MS)
    : LINGERING_TIMEOUT_MS;
}

export class HandshakeReader {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private ended: HandshakeEnded | null = null;

  constructor(
    private readonly socket: Socket,
    private readonly maxBytes: number,
  ) {
    socket.on('data', this.onData);
    socket.once('end', this.onEnd);
    socket.once('close', this.onClose);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    if (this.buf.length > this.maxBytes) this.socket.pause();
    this.waiter?.();
  };

  private readonly onEnd = (): void => {
    this.ended ??= new HandshakeEnded(endedByReset(this.socket) ? 'ZL_CLIENT_RESET' : 'ZL_CLIENT_ABORTED');
    this.waiter?.();
  };

  /** Closed without an end first: reset by the peer (an 'error' came before), or destroyed here. */
  private readonly onClose = (hadError: boolean): void => {
    this.ended ??= new HandshakeEnded(hadError ? 'ZL_CLIENT_RESET' : null);
    this.waiter?.();
  };

  /** Runs `parse` on what has arrived until it completes; rejects on EOF (`HandshakeEnded`) or oversize. */
  async read<T>(parse: (buf: Buffer) => ParseStep<T>): Promise<T> {
    for (;;) {
      const step = parse(this.buf);
      if (!('need' in step)) {
        this.buf = this.buf.subarray(step.used);
        return step.done;
      }
      if (this.buf.length > this.maxBytes) throw new Error('handshake too large');
      if (this.ended !== null) throw this.ended;
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
    this.socket.off('close', this.onClose);
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
