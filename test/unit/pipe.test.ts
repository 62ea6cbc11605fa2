/** `pipeStream` on real loopback sockets: what a far side that is already over does to the client. */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { after, test } from 'node:test';
import { type PipeResult, pipeStream } from '../../src/proxy/pipe.js';
import { closeServer, endOf, listen, port, RESETS_TOLD } from '../helpers/net.js';

const server = createServer({ allowHalfOpen: true });
const sockets: Socket[] = [];
after(() => {
  for (const s of sockets) s.destroy();
  return closeServer(server);
});

/** [the side the test holds, the side zipline would hold] of one loopback connection. */
async function pair(): Promise<[Socket, Socket]> {
  if (!server.listening) await listen(server);
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const held = connect({ port: port(server), host: '127.0.0.1', allowHalfOpen: true });
  await once(held, 'connect');
  const [other] = await accepted;
  sockets.push(held, other);
  return [held, other];
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
