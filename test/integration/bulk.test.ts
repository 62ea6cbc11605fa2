/**
 * 1 GiB of random bytes each way, at the same time, through the real zipline process: both
 * directions arrive with the same SHA-256 as was sent.
 */
import assert from 'node:assert/strict';
import { createHash, randomFillSync } from 'node:crypto';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import { closeServer, dial, port, tcpServer } from '../helpers/net.js';
import { spawnZipline } from '../helpers/zipline.js';

const GiB = 1024 ** 3;
const CHUNK = 256 * 1024;

/** Sends `total` random bytes; resolves with their SHA-256. Ends the socket when done. */
function sendRandom(s: Socket, total: number): Promise<string> {
  const hash = createHash('sha256');
  let sent = 0;
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    const pump = (): void => {
      while (sent < total) {
        const b = randomFillSync(Buffer.allocUnsafe(Math.min(CHUNK, total - sent)));
        hash.update(b);
        sent += b.length;
        if (!s.write(b)) return void s.once('drain', pump);
      }
      s.end();
      resolve(hash.digest('hex'));
    };
    pump();
  });
}

/** Hashes everything received until FIN. */
function hashReceived(s: Socket): Promise<{ hash: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  return new Promise((resolve, reject) => {
    s.on('data', (d: Buffer) => {
      hash.update(d);
      bytes += d.length;
    });
    s.once('end', () => resolve({ hash: hash.digest('hex'), bytes }));
    s.once('error', reject);
  });
}

test('1 GiB each way through the proxy arrives with the same SHA-256', async () => {
  let originSide: Promise<[{ hash: string; bytes: number }, string]> | undefined;
  const origin = await tcpServer((s) => {
    originSide = Promise.all([hashReceived(s), sendRandom(s, GiB)]);
  });
  const z = await spawnZipline(`
admin: { listen: 127.0.0.1:0 }
log: { access: off }
upstreams: { origin: { servers: [127.0.0.1:${port(origin)}] } }
listeners: [{ name: bulk, protocol: tcp, listen: 127.0.0.1:0, upstream: origin }]
`);
  try {
    const c = await dial(await z.listener('bulk'));
    const [clientReceived, clientSent] = await Promise.all([hashReceived(c), sendRandom(c, GiB)]);
    assert.ok(originSide);
    const [originReceived, originSent] = await originSide;
    assert.equal(originReceived.bytes, GiB);
    assert.equal(clientReceived.bytes, GiB);
    assert.equal(originReceived.hash, clientSent, 'client → origin intact');
    assert.equal(clientReceived.hash, originSent, 'origin → client intact');
  } finally {
    await z.stop();
    await closeServer(origin);
  }
});
