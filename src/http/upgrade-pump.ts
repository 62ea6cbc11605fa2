/**
 * After `101 Switching Protocols` (WebSocket, h2c…): a raw two-way pump between the client and
 * the upstream socket with the L4 rules: backpressure both ways (a full side pauses the other's
 * reads), half-close passed on (FIN → `end()`), a reset or error on either side destroys both,
 * and the connection counts as idle (for `client_idle`) when no byte moved either way.
 */
import type { Socket } from 'node:net';
import { abortWrites, releaseWrites } from './write-batch.js';

export class UpgradePump {
  private done = false;

  constructor(
    private readonly client: Socket,
    private readonly upstream: Socket,
    /** The 101 head for the client. */
    head: string,
    early: Buffer | null,
    upstreamRest: Buffer,
  ) {
    // the client connection's own 'end' and 'drain' handlers give way to the pump's
    client.removeAllListeners('end');
    client.removeAllListeners('drain');
    // from here the pump writes to both sockets itself: what is held goes first
    releaseWrites(client);
    releaseWrites(upstream);
    client.write(head, 'latin1');
    // upstream bytes are views of the shared read buffer (upstream-connection.ts): copied
    if (upstreamRest.length > 0) client.write(Buffer.from(upstreamRest));
    if (early !== null && early.length > 0) upstream.write(early);
    // both ways the connections' reads are diverted here (`fromClient`, `fromUpstream`): views
    // of shared read buffers, copied before they are written
    upstream.on('drain', () => client.resume());
    client.on('drain', () => upstream.resume());
    // FIN is passed on; once both sides sent theirs the sockets close by themselves
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    // a FIN the client sent with its request (`client_fin: finish`) came before the pump
    if (client.readableEnded) upstream.end();
    upstream.on('close', () => this.destroy());
    upstream.on('error', () => this.destroy());
    client.on('close', () => this.destroy());
    upstream.resume();
    client.resume();
  }

  fromClient(view: Buffer): void {
    if (!this.upstream.write(Buffer.from(view))) this.client.pause();
  }

  fromUpstream(view: Buffer): void {
    if (!this.client.write(Buffer.from(view))) this.upstream.pause();
  }

  /** Changes whenever bytes moved (for the idle sweep). */
  activity(): number {
    return this.client.bytesRead + this.upstream.bytesRead;
  }

  /**
   * `client_idle` with no byte moved: a side that leaves bytes queued in zipline is not reading
   * (the other side is paused for it), so it is reset and what waits for it dropped, as an HTTP
   * response the client takes nothing of; a FIN would leave them in the kernel for it.
   */
  timeOut(): void {
    if (this.client.writableLength > 0) abortWrites(this.client, true);
    if (this.upstream.writableLength > 0) abortWrites(this.upstream, true);
    this.destroy();
  }

  destroy(): void {
    if (this.done) return;
    this.done = true;
    this.client.destroy();
    this.upstream.destroy();
  }
}
