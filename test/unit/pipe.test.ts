/** `pipeStream` on real loopback sockets: what a far side that is already over does to the client. */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, test } from 'node:test';
import { type PipeResult, pipeStream } from '../../src/proxy/pipe.js';
import { endOf, RESETS_TOLD, socketPair } from '../helpers/net.js';

const sockets: Socket[] = [];
after(() => {
  for (const s of sockets) s.destroy();
});

/** [the side the test holds, the side zipline would hold] of one loopback connection. */
async function pair(): Promise<[Socket, Socket]> {
  const both = await socketPair();
  sockets.push(...both);
  return both;
}

test('a destination its server reset before the pipe began: the client is reset too, ZL_UPSTREAM_RESET', {
  skip: RESETS_TOLD ? false : 'telling an RST from a FIN needs the addon',
}, async () => {
  const [client, local] = await pair();
  const [destServer, dest] = await pair();
  dest.on('error', () => {});
  destServer.resetAndDestroy();
  // the dial's socket is over before the pipe starts
  await new Promise((resolve) => dest.once('close', resolve));
  assert.equal((dest.errored as NodeJS.ErrnoException | null)?.code, 'ECONNRESET');
  const end = endOf(client);
  const result = await new Promise<PipeResult>((resolve) => pipeStream(dest, local, 0, resolve));
  assert.equal(result.error, 'ZL_UPSTREAM_RESET');
  assert.equal((await end).kind, 'reset');
});

test('a destination closed cleanly before the pipe began: the client gets a FIN', {
  skip: RESETS_TOLD ? false : 'telling an RST from a FIN needs the addon',
}, async () => {
  const [client, local] = await pair();
  const [destServer, dest] = await pair();
  dest.resume();
  destServer.end();
  dest.end();
  await new Promise((resolve) => dest.once('close', resolve));
  const end = endOf(client);
  await new Promise<PipeResult>((resolve) => pipeStream(dest, local, 0, resolve));
  assert.equal((await end).kind, 'fin');
});
