/** Writes held to the end of the event-loop turn (src/http/write-batch.ts), on real sockets. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { test } from 'node:test';
import { createServer as createTlsServer, connect as tlsConnect } from 'node:tls';
import {
  DIRECT_MAX,
  directWritesAvailable,
  holdWrites,
  releaseWrites,
  writeBytes,
  writeText,
} from '../../src/http/write-batch.js';

const direct = { skip: directWritesAvailable ? false : 'direct sends need the native module (Linux)' };
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

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

test(
  "direct sends: text leaves at the end of the turn without Node's write queue, in order with corked bytes",
  direct,
  async () => {
    const p = await pair();
    try {
      const got = received(p.b, 13);
      assert.equal(writeText(p.a, 'GET ', true), true);
      assert.equal(writeText(p.a, '/ok', true), true);
      assert.equal(p.a.writableLength, 0, 'held outside Node');
      await turn();
      // Node's count of written bytes leaves out what the direct send wrote
      assert.equal(p.a.bytesWritten, 0, 'sent by the direct send');
      writeText(p.a, 'one', true);
      writeBytes(p.a, Buffer.from('two')); // corked: the held text goes into the cork first
      writeText(p.a, '!', true); // and later text joins the cork
      assert.equal(p.a.writableLength, 7);
      await turn();
      assert.equal(await got, 'GET /okonetwo!');
      // not direct: Node writes it
      writeText(p.a, 'abc', false);
      await turn();
      assert.equal(p.a.bytesWritten, 10);
    } finally {
      p.close();
    }
  },
);

test(
  'direct sends: text past DIRECT_MAX goes through Node; releaseWrites sends now, before an end()',
  direct,
  async () => {
    const p = await pair();
    try {
      const big = 'x'.repeat(DIRECT_MAX + 1);
      const got = received(p.b, big.length + 9);
      writeText(p.a, 'head', true);
      writeText(p.a, big, true); // too much to hold: corked after the held head
      await turn();
      assert.equal(p.a.bytesWritten, big.length + 4, 'the head moved into Node with the rest');
      writeText(p.a, 'tail', true);
      releaseWrites(p.a);
      p.a.end('.');
      assert.equal(await got, `head${big}tail.`);
    } finally {
      p.close();
    }
  },
);

test(
  'direct sends: a peer that stops reading gets every byte once it reads (partial sends and EAGAIN go to Node)',
  direct,
  async () => {
    const p = await pair();
    try {
      p.b.pause();
      const sent = createHash('sha256');
      let bytes = 0;
      let n = 0;
      // small writes, one per turn, until the kernel's buffers are full and Node queues past its
      // high-water mark (write() says false)
      for (;;) {
        const text = `${String(n++).padStart(8, '0')}${'y'.repeat(1000 + (n % 977))}`;
        sent.update(text, 'latin1');
        bytes += text.length;
        const ok = writeText(p.a, text, true);
        await turn();
        if (!ok || p.a.writableLength > 0) break;
        assert.ok(bytes < 64 * 1024 * 1024, 'the socket never filled');
      }
      assert.ok(p.a.writableLength > 0, 'Node holds what the kernel did not take');
      // while Node has a queue, text goes behind it (never around it)
      const more = 'z'.repeat(100);
      sent.update(more, 'latin1');
      bytes += more.length;
      writeText(p.a, more, true);
      assert.ok(p.a.writableLength >= 100, 'queued behind, not sent directly');
      const got = createHash('sha256');
      let gotBytes = 0;
      const done = new Promise<void>((resolve) => {
        p.b.on('data', (c: Buffer) => {
          got.update(c);
          gotBytes += c.length;
          if (gotBytes >= bytes) resolve();
        });
      });
      p.b.resume();
      await done;
      assert.equal(gotBytes, bytes);
      assert.equal(got.digest('hex'), sent.digest('hex'));
    } finally {
      p.close();
    }
  },
);

test(
  'direct sends: a socket destroyed during the turn sends nothing, not even to the socket given its descriptor',
  direct,
  async () => {
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as { port: number }).port;
    const fdOf = (s: Socket): number => (s as unknown as { _handle: { fd: number } })._handle.fd;
    const aAccepted = once(server, 'connection');
    const a = connect(port, '127.0.0.1');
    await once(a, 'connect');
    const [aPeer] = (await aAccepted) as [Socket];
    const bPeer = once(server, 'connection');
    writeText(a, 'lost', true);
    const fd = fdOf(a);
    a.destroy();
    // made (in a nextTick) before the turn ends and `a`'s text would go: the lowest free
    // descriptor, the one `a` had
    const b = connect(port, '127.0.0.1');
    try {
      await once(b, 'connect');
      assert.equal(fdOf(b), fd, 'the descriptor number was taken again');
      const [peer] = (await bPeer) as [Socket];
      const got = received(peer, 2);
      b.write('ok');
      assert.equal(await got, 'ok', "nothing of the destroyed socket's text");
      assert.equal(a.bytesWritten, 0);
    } finally {
      b.destroy();
      aPeer.destroy();
      server.close();
    }
  },
);

test('direct sends: a TLS socket is never written around its encryption', direct, async () => {
  const selfsigned = await import('selfsigned');
  const pems = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
  });
  const server = createTlsServer({ key: pems.private, cert: pems.cert });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const accepted = once(server, 'secureConnection');
  const client = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false });
  try {
    await once(client, 'secureConnect');
    const [peer] = (await accepted) as [Socket];
    const got = received(peer, 11);
    assert.equal(writeText(client, 'hello ', true), true);
    writeText(client, 'world', true);
    await turn();
    // raw bytes on the wire would be a bad record: the peer fails and closes
    const failed = once(peer, 'close').then(() => 'closed by the peer');
    assert.equal(await Promise.race([got, failed]), 'hello world', 'plaintext through TLS');
  } finally {
    client.destroy();
    server.close();
  }
});
