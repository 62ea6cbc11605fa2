/**
 * The pump of an upgraded (101) connection on real loopback sockets: how each side's end reaches
 * the other, and the one `ended` report the access line is written from.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { after, test } from 'node:test';
import type { ErrorCode } from '../../src/errors.js';
import { type DivertedUpstream, UpgradePump } from '../../src/http/upgrade-pump.js';
import { endOf, socketPair, until } from '../helpers/net.js';

const HEAD = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n';

const sockets: Socket[] = [];
after(() => {
  for (const s of sockets) s.destroy();
});

type Ended = { bytesIn: number; bytesOut: number; code: ErrorCode | null };

/**
 * A pump between a client and an origin, each a loopback pair: `client` and `origin` are the
 * test's ends, `zClient` and `zUpstream` zipline's. Reads are wired as the HTTP connections
 * divert them; `ends` lists every `ended` call.
 */
async function pumped(beforePump: (zUpstream: Socket) => void = () => {}) {
  const [client, zClient] = await socketPair();
  const [zUpstream, origin] = await socketPair();
  sockets.push(client, zClient, zUpstream, origin);
  for (const s of [client, origin]) s.on('error', () => {});
  zClient.pause();
  zUpstream.pause();
  beforePump(zUpstream);
  const ends: Ended[] = [];
  const upstream: DivertedUpstream = { socket: zUpstream, divert: null };
  const pump = new UpgradePump(zClient, upstream, HEAD, null, Buffer.alloc(0), (bytesIn, bytesOut, code) =>
    ends.push({ bytesIn, bytesOut, code }),
  );
  zClient.on('data', (v: Buffer) => pump.fromClient(v));
  zUpstream.on('data', (v: Buffer) => upstream.divert?.(v));
  return { client, zClient, zUpstream, origin, ends, pump };
}

test('the client closes cleanly while bytes for the origin still wait in zipline: they are delivered, then one clean end', async () => {
  // the origin reads nothing yet: zipline's upstream socket holds a few KiB in Node, below its
  // high-water mark, so the client's bytes and FIN are still read
  let pre = 0;
  const p = await pumped((zUpstream) => {
    const block = Buffer.alloc(4096, 0x61);
    while (zUpstream.writableLength === 0) {
      zUpstream.write(block);
      pre += block.length;
    }
  });
  p.origin.pause();
  // the origin is done sending: the client gets the 101 head and a FIN (and keeps its side open)
  let head = '';
  p.client.on('data', (d: Buffer) => {
    head += d.toString('latin1');
  });
  const clientEnded = once(p.client, 'end');
  p.origin.end();
  await clientEnded;
  assert.equal(head, HEAD);
  const tail = Buffer.alloc(1000, 0x7a);
  p.client.end(tail);
  await until(() => p.zClient.closed, "zipline's client side closed (both FINs)");
  assert.ok(p.zUpstream.writableLength > 0, 'bytes for the origin still wait in zipline');
  assert.equal(p.ends.length, 0, 'the session is not over while the origin has bytes to take');
  const atOrigin = endOf(p.origin);
  p.origin.resume();
  const taken = await atOrigin;
  assert.equal(taken.kind, 'fin');
  assert.equal(taken.data.length, pre + tail.length);
  assert.equal(taken.data.subarray(pre).toString('latin1'), tail.toString('latin1'));
  await until(() => p.ends.length > 0, 'the session ended');
  assert.deepEqual(p.ends, [{ bytesIn: 1000, bytesOut: 0, code: null }]);
});

test('bytes both ways are counted (not the 101 head), and a clean close both ways ends the session once', async () => {
  const p = await pumped();
  p.origin.on('data', (d: Buffer) => p.origin.write(d)); // echo
  p.origin.on('end', () => p.origin.end());
  const atClient = endOf(p.client);
  p.client.end(Buffer.alloc(70_000, 0x62));
  const got = await atClient;
  assert.equal(got.kind, 'fin');
  assert.equal(got.data.length, HEAD.length + 70_000);
  await until(() => p.ends.length > 0, 'the session ended');
  assert.deepEqual(p.ends, [{ bytesIn: 70_000, bytesOut: 70_000, code: null }]);
});

test('a client reset is passed on as a reset to the origin: ZL_CLIENT_RESET', async () => {
  const p = await pumped();
  const atOrigin = endOf(p.origin);
  p.client.write('abc');
  await until(() => p.ends.length > 0 || p.zClient.bytesRead === 3, 'zipline read the bytes');
  p.client.resetAndDestroy();
  assert.equal((await atOrigin).kind, 'reset');
  await until(() => p.ends.length > 0, 'the session ended');
  assert.deepEqual(p.ends, [{ bytesIn: 3, bytesOut: 0, code: 'ZL_CLIENT_RESET' }]);
});

test('an origin reset is passed on as a reset to the client: ZL_UPSTREAM_RESET', async () => {
  const p = await pumped();
  const atClient = endOf(p.client);
  p.origin.resetAndDestroy();
  assert.equal((await atClient).kind, 'reset');
  await until(() => p.ends.length > 0, 'the session ended');
  assert.deepEqual(p.ends, [{ bytesIn: 0, bytesOut: 0, code: 'ZL_UPSTREAM_RESET' }]);
});

test('closed from outside (drain timeout): both sides go, the code given, one end however the sockets close after', async () => {
  const p = await pumped();
  const atClient = endOf(p.client);
  const atOrigin = endOf(p.origin);
  p.pump.destroy('ZL_DRAIN_TIMEOUT');
  await Promise.all([atClient, atOrigin]);
  await until(() => p.zClient.closed && p.zUpstream.closed, "zipline's sockets closed");
  assert.deepEqual(p.ends, [{ bytesIn: 0, bytesOut: 0, code: 'ZL_DRAIN_TIMEOUT' }]);
});
