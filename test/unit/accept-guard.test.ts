/**
 * The accept guard (src/l4/accept-guard.ts), driven through a real listening handle's accept
 * callback: what libuv 1.46 calls, in a loop, once its own reserve descriptor is lost.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { constants } from 'node:os';
import { test } from 'node:test';
import { guardAccepts, reserveSize } from '../../src/l4/accept-guard.js';

type Handle = { onconnection(err: number, client?: { close(): void }): void };

const openFds = (): number => readdirSync('/proc/self/fd').length;

test('out of descriptors: an EMFILE callback frees a reserve descriptor (no error, no retry into the wall), what is accepted next is shed, the reserve comes back', {
  skip: process.platform !== 'linux' ? 'Linux (/proc/self/fd)' : false,
}, async () => {
  const server: Server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const errors: Error[] = [];
  server.on('error', (e) => errors.push(e));
  let shed = 0;
  try {
    guardAccepts(server, () => shed++);
    const handle = (server as unknown as { _handle: Handle })._handle;
    const full = reserveSize();
    assert.ok(full > 0, 'a reserve is held');
    const fds = openFds();
    handle.onconnection(-constants.errno.EMFILE); // libuv's codes are negative errnos
    assert.equal(reserveSize(), full - 1);
    assert.equal(openFds(), fds - 1, 'one descriptor freed for the next accept');
    assert.deepEqual(errors, [], 'not passed on: Node would emit it and libuv accept again at once');
    // what libuv accepts with it (and after it, until its queue is empty) is closed unanswered
    let closed = 0;
    handle.onconnection(0, { close: () => closed++ });
    handle.onconnection(0, { close: () => closed++ });
    assert.equal(closed, 2);
    assert.equal(shed, 2);
    await new Promise((r) => setImmediate(r));
    assert.equal(reserveSize(), full, 'the reserve is taken back once descriptors allow');
    assert.equal(openFds(), fds);
    // other accept errors go on to the server as before
    handle.onconnection(-constants.errno.ECONNABORTED);
    assert.equal(errors.length, 1);
  } finally {
    server.close();
  }
});
