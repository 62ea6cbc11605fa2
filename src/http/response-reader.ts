/**
 * Reads one upstream response off a connection's bytes: heads until the final one (1xx are
 * handed to `onInterim`, a 101 to `onSwitching`), then — once the exchange chose to stream it
 * (`startBody`) — the body by its framing: Content-Length, chunked (validated; passed on as
 * framed, or de-chunked for clients that cannot take chunked coding) or until the connection
 * closes. Bodies are never buffered: body bytes go to `onBody` as subarrays of what was read.
 */
import { isZiplineError, ZiplineError } from '../errors.js';
import { ChunkedDecoder } from './parser/chunked.js';
import { findHeadEnd } from './parser/request-head.js';
import { mayStartStatusLine, parseResponseHead, type ResponseHead } from './parser/response-head.js';

const MAX_RESPONSE_HEAD = 64 * 1024;
/**
 * The 1xx heads of one response, together. Each is passed on to the client as it comes, so a
 * server sending them without end made zipline send them on without end, and hold them in memory
 * while the client did not read (1 GB in 10 s here). Real ones are a few (100, 102 while it works,
 * 103 with a few Link fields): 64 KiB is ~2,000 `102 Processing`. Beyond it the response is bad.
 */
const MAX_INTERIM_BYTES = 64 * 1024;

export interface ResponseEvents {
  onInterim(resp: ResponseHead): void;
  onSwitching(resp: ResponseHead, rest: Buffer): void;
  /** The final head; the body (if any) starts at `buf[end]`. */
  onFinalHead(resp: ResponseHead, buf: Buffer, end: number): void;
  /** The final head may go to the client (once the bytes read with it were checked). */
  onHeadOut(resp: ResponseHead): void;
  onBody(chunk: Buffer): void;
  /** The body ended as framed; `extra`: bytes followed it (the connection is out of step). */
  onComplete(extra: boolean): void;
  /** A malformed head or chunked body. */
  onMalformed(): void;
}

export class ResponseReader {
  /** Bytes read for this response so far (heads included). */
  bytes = 0;
  /** Bytes of the 1xx heads read so far. */
  private interimBytes = 0;
  resp: ResponseHead | null = null;
  private state: 'head' | 'body' | 'idle' = 'head';
  private pending: Buffer | null = null;
  private remaining = 0;
  private decoder: ChunkedDecoder | null = null;
  /** De-chunked body data (made on first use: HTTP/1.0 and HTTP/2 clients). */
  private sink: ((data: Buffer) => void) | null = null;
  /**
   * `startBody` holds the final head back while it checks the body bytes read with it: the head
   * goes out before the first body byte, at the end, or after that check, so a body malformed from
   * its first bytes is still a 502 rather than an empty reply (nothing reached the client).
   */
  private headHeld = false;

  constructor(
    private readonly method: string,
    /** The client takes chunked coding as is. */
    private readonly passesChunked: boolean,
    private readonly events: ResponseEvents,
  ) {}

  /** The body ends when the connection closes (no length, not chunked). */
  get closeDelimited(): boolean {
    return this.state === 'body' && this.resp?.body === 'close';
  }

  feed(chunk: Buffer): void {
    this.bytes += chunk.length;
    if (this.state === 'body') this.onBodyBytes(chunk, 0);
    else if (this.state === 'head') this.onHeadBytes(chunk);
  }

  /** Streams the body of the final head (`onFinalHead` arguments). */
  startBody(resp: ResponseHead, buf: Buffer, end: number): void {
    this.state = 'body';
    this.headHeld = true;
    switch (resp.body) {
      case 'none':
        this.finish(end < buf.length);
        return;
      case 'length':
        this.remaining = resp.contentLength;
        if (this.remaining === 0) {
          this.finish(end < buf.length);
          return;
        }
        break;
      case 'chunked':
        this.decoder = new ChunkedDecoder();
        break;
      case 'close':
        break;
    }
    if (end < buf.length) this.onBodyBytes(buf, end);
    this.releaseHead();
  }

  /** Content-Length body bytes still to come (0 for other framings). */
  get remainingBody(): number {
    return this.state === 'body' && this.resp?.body === 'length' ? this.remaining : 0;
  }

  /** Stops reading (the exchange ended, switched protocols, or the body went native). */
  stop(): void {
    this.state = 'idle';
    this.pending = null;
    this.headHeld = false;
  }

  private releaseHead(): void {
    if (!this.headHeld) return;
    this.headHeld = false;
    this.events.onHeadOut(this.resp as ResponseHead);
  }

  /** Body bytes for the client, after the head. */
  private body(data: Buffer): void {
    this.releaseHead();
    this.events.onBody(data);
  }

  private onHeadBytes(chunk: Buffer): void {
    // `chunk` views the upstream read buffer; a concatenation is our own copy
    const owned = this.pending !== null;
    let buf = owned ? Buffer.concat([this.pending as Buffer, chunk]) : chunk;
    this.pending = null;
    for (;;) {
      let end: number;
      let resp: ResponseHead;
      try {
        end = findHeadEnd(buf, buf.length, MAX_RESPONSE_HEAD);
        if (end < 0) {
          if (!mayStartStatusLine(buf)) throw new ZiplineError('ZL_HTTP_BAD_REQUEST', 'not a status line');
          this.pending = owned ? buf : Buffer.from(buf);
          return;
        }
        resp = parseResponseHead(buf, end, this.method);
      } catch (err) {
        if (!isZiplineError(err)) throw err;
        this.stop();
        this.events.onMalformed();
        return;
      }
      if (resp.status >= 200) {
        this.resp = resp;
        this.state = 'idle'; // until startBody
        this.events.onFinalHead(resp, buf, end);
        return;
      }
      if (resp.status === 101) {
        this.stop();
        this.events.onSwitching(resp, buf.subarray(end));
        return;
      }
      this.interimBytes += end;
      if (this.interimBytes > MAX_INTERIM_BYTES) {
        this.stop();
        this.events.onMalformed();
        return;
      }
      this.events.onInterim(resp);
      if (end === buf.length) return;
      buf = buf.subarray(end);
    }
  }

  private onBodyBytes(buf: Buffer, start: number): void {
    const resp = this.resp as ResponseHead;
    if (resp.body === 'length') {
      const n = Math.min(this.remaining, buf.length - start);
      if (n > 0) this.body(start === 0 && n === buf.length ? buf : buf.subarray(start, start + n));
      this.remaining -= n;
      if (this.remaining === 0 && this.state === 'body') this.finish(start + n < buf.length);
      return;
    }
    if (resp.body === 'chunked') {
      const decoder = this.decoder as ChunkedDecoder;
      let stop: number;
      try {
        this.sink ??= (data: Buffer): void => this.body(data);
        stop = decoder.feed(buf, start, buf.length, this.passesChunked ? ignoreData : this.sink);
      } catch (err) {
        if (!isZiplineError(err)) throw err;
        this.stop();
        this.events.onMalformed();
        return;
      }
      if (this.passesChunked && stop > start) this.body(buf.subarray(start, stop));
      if (decoder.done && this.state === 'body') this.finish(stop < buf.length);
      return;
    }
    this.body(start === 0 ? buf : buf.subarray(start));
  }

  private finish(extra: boolean): void {
    this.state = 'idle';
    this.releaseHead();
    this.events.onComplete(extra);
  }
}

function ignoreData(): void {}
