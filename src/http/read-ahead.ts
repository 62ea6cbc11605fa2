/**
 * What a client sent ahead of what its connection is serving: pipelined requests, or the part of a
 * head that has arrived. Reads arrive as views of a shared buffer (client-reads.ts), so what is
 * kept is a copy. It is bounded: past a head's limit and 64 KiB the connection stops reading
 * until it has served what it holds, and nothing else may resume reading meanwhile (a client that
 * pipelined without reading the responses had every request's exchange resume it, 16 KiB more kept
 * each time: 13 MB after 830 requests, the whole copied anew per read).
 */
const PIPELINE_SLACK = 64 * 1024;

export class ReadAhead {
  private bytes: Buffer | null = null;

  /** `headLimit`: the listener's `max_header_bytes` (it may change on reload). */
  constructor(private readonly headLimit: () => number) {}

  /** Keeps a copy of `view` after what is kept. */
  keep(view: Buffer): void {
    this.bytes = this.bytes === null ? Buffer.from(view) : Buffer.concat([this.bytes, view]);
  }

  /** What is kept, now the caller's (null: nothing). */
  take(): Buffer | null {
    const b = this.bytes;
    this.bytes = null;
    return b;
  }

  clear(): void {
    this.bytes = null;
  }

  get empty(): boolean {
    return this.bytes === null;
  }

  get size(): number {
    return this.bytes === null ? 0 : this.bytes.length;
  }

  /** More is kept than the bound allows: reading must wait. */
  get full(): boolean {
    return this.bytes !== null && this.bytes.length > this.headLimit() + PIPELINE_SLACK;
  }
}
