/** Writes held to the end of the event-loop turn (src/http/write-batch.ts), on real sockets. */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { test } from 'node:test';
import { holdWrites, releaseWrites } from '../../src/http/write-batch.js';

async function pair(): Promise<{ a: Socket; b: Socket; close(): void }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const accepted = once(server, 'connection');
  const a = connect(port, '127.0.0.1');
  await once(a, 'connect');
  const [b] = (await accepted) as [Socket];
  return {
    a,
    b,
    close: () => {
      a.destroy();
      b.destroy();
      server.close();
    },
  };
}

function received(s: Socket, bytes: number): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    s.setEncoding('latin1');
    s.on('data', (c: string) => {
      text += c;
      if (text.length >= bytes) resolve(text);
    });
  });
}

test('held writes leave together at the end of the turn, each socket in its own order', async () => {
  const p = await pair();
  const q = await pair();
  try {
    const fromA = received(p.b, 6);
    const fromQ = received(q.b, 3);
    holdWrites(p.a);
    p.a.write('one', 'latin1');
    holdWrites(q.a);
    q.a.write('xyz', 'latin1');
    holdWrites(p.a); // again in the same turn: no second cork
    p.a.write('two', 'latin1');
    assert.equal(p.a.writableLength, 6, 'nothing sent during the turn');
    assert.equal(q.a.writableLength, 3);
    await new Promise((r) => setImmediate(r));
    assert.equal(p.a.writableLength, 0, 'sent once the turn ended');
    assert.equal(await fromA, 'onetwo');
    assert.equal(await fromQ, 'xyz');
    // the next turn starts unheld
    p.a.write('!', 'latin1');
    assert.equal(p.a.writableLength, 0);
  } finally {
    p.close();
    q.close();
  }
});

test('releaseWrites sends one socket now (before a hand-off); end() is never held back', async () => {
  const p = await pair();
  try {
    holdWrites(p.a);
    p.a.write('head', 'latin1');
    releaseWrites(p.a);
    assert.equal(p.a.writableLength, 0, 'released: written at once');
    p.a.write('more', 'latin1');
    assert.equal(p.a.writableLength, 0, 'no longer held this turn');
    holdWrites(p.a);
    p.a.end('bye', 'latin1');
    const text = await received(p.b, 11);
    assert.equal(text, 'headmorebye');
  } finally {
    p.close();
  }
});
