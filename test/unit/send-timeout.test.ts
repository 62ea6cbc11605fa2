/**
 * The send timeout of zipline's own HTTP servers (admin, /shm), on a real `node:http` server with
 * a short timeout: a client that stops reading a response larger than the socket buffers loses its
 * connection; a slow reader that keeps taking bytes, and a request the server takes long to answer,
 * do not.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, test } from 'node:test';
import { armSendTimeout } from '../../src/admin/send-timeout.js';
import { seriesValue } from '../helpers/metrics.js';
import { closeServer, endOf, kernelTcpBufferMax, listen, port, RESETS_TOLD } from '../helpers/net.js';

const MS = 300;
const SERIES = 'zipline_connection_errors_total{listener="send-test",code="ZL_ADMIN_SEND_TIMEOUT"}';
/** More than the kernel's buffers on both sides can hold. */
const BIG = Buffer.alloc(kernelTcpBufferMax() + 4 * 1024 * 1024, 0x61);

const servers: Server[] = [];
after(() => Promise.all(servers.map(closeServer)));

/** A server whose `/big` answers BIG, `/late` answers "ok" after 3 timeouts; its sockets' closes are told. */
async function server(): Promise<{ port: number; closed: Promise<void> }> {
  let closedNow: () => void = () => {};
  const closed = new Promise<void>((r) => {
    closedNow = r;
  });
  const s = createServer((req, res) => {
    armSendTimeout(req, res, 'send-test', 'ZL_ADMIN_SEND_TIMEOUT', MS);
    req.socket.once('close', closedNow);
    if (req.url === '/late') {
      setTimeout(() => res.end('ok'), 3 * MS);
      return;
    }
    res.writeHead(200, { 'content-length': BIG.length });
    res.end(BIG);
  });
  await listen(s);
  servers.push(s);
  return { port: port(s), closed };
}

function ask(p: number, path: string): Socket {
  const c = connect(p, '127.0.0.1');
  c.write(`GET ${path} HTTP/1.1\r\nhost: x\r\n\r\n`);
  return c;
}

test('a client that stops reading its response is closed after the send timeout, and counted', {
  timeout: 30_000,
}, async () => {
  const before = await seriesValue(SERIES);
  const s = await server();
  const c = ask(s.port, '/big');
  c.pause(); // never reads
  const t0 = performance.now();
  await s.closed;
  assert.ok(performance.now() - t0 >= MS - 20, 'not before the timeout');
  assert.equal(await seriesValue(SERIES), before + 1);
  // reset: the kernel does not keep the rest for it (an orphan in FIN-WAIT-1 with full buffers);
  // told from a FIN where the addon reads the socket's error (RESETS_TOLD)
  const end = endOf(c);
  c.resume();
  if (RESETS_TOLD) assert.equal((await end).kind, 'reset');
  else await end;
});

test('a slow reader that keeps taking bytes gets the whole response, however long it takes', async () => {
  const before = await seriesValue(SERIES);
  const s = await server();
  const c = ask(s.port, '/big');
  let got = 0;
  let headLength = -1;
  let sinceBreak = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    c.on('data', (d: Buffer) => {
      if (headLength < 0) headLength = d.indexOf('\r\n\r\n') + 4;
      got += d.length;
      if (got >= headLength + BIG.length) return resolve();
      sinceBreak += d.length;
      // a break of half the timeout after each 2 MiB: the whole response takes several timeouts
      if (sinceBreak >= 2 * 1024 * 1024) {
        sinceBreak = 0;
        c.pause();
        setTimeout(() => c.resume(), MS / 2);
      }
    });
    c.on('close', () => resolve());
  });
  assert.equal(got, headLength + BIG.length, 'the whole response arrived');
  assert.ok(performance.now() - t0 > 2 * MS, 'it took longer than the timeout');
  assert.equal(await seriesValue(SERIES), before, 'nothing counted');
  c.destroy();
});

test('a request the server takes longer than the timeout to answer is answered', async () => {
  const before = await seriesValue(SERIES);
  const s = await server();
  const c = ask(s.port, '/late');
  let text = '';
  c.setEncoding('latin1');
  await new Promise<void>((resolve) => {
    c.on('data', (d: string) => {
      text += d;
      if (text.endsWith('\r\n\r\nok')) resolve();
    });
    c.on('close', () => resolve());
  });
  assert.match(text, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok$/);
  assert.equal(await seriesValue(SERIES), before);
  c.destroy();
});
