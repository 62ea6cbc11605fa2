/**
 * `listeners[].limits.max_connections` on tcp, http and socks5 listeners: a connection beyond the
 * limit is closed without a byte, counted (`ZL_LISTENER_OVER_LIMIT`), and said in the process log
 * once per 10 s per listener with how many were refused; a connection is served again once one
 * closes.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { pino } from 'pino';
import { okAndEcho } from '../helpers/http.js';
import { seriesValue } from '../helpers/metrics.js';
import { splitAddress, until } from '../helpers/net.js';
import { startRuntime } from '../helpers/zipline.js';

const peers = okAndEcho();

const overLimit = (listener: string): Promise<number> =>
  seriesValue(`zipline_downstream_rejected_total{listener="${listener}",code="ZL_LISTENER_OVER_LIMIT"}`);

/** Every client socket of the test, destroyed before zipline stops (its drain would wait for them). */
const clients: Socket[] = [];

async function hold(address: string): Promise<Socket> {
  const [host, port] = splitAddress(address);
  const s = connect({ host, port });
  clients.push(s);
  s.on('error', () => {}); // a refused connection may be reset
  await once(s, 'connect');
  return s;
}

/**
 * Connects and writes `data`: '' once a refused connection closes, or the first bytes of an
 * accepted one (then it is left open, and the caller's assertion fails at once).
 */
async function refusedOrAnswer(address: string, data: string): Promise<string> {
  const s = await hold(address);
  s.write(data);
  if (s.closed) return '';
  return new Promise((resolve) => {
    s.once('data', (d: Buffer) => resolve(d.toString('latin1')));
    s.once('close', () => resolve(''));
  });
}

test('limits.max_connections: beyond it a connection is closed unanswered, counted, and warned about once per 10 s', async () => {
  const warnings: Record<string, unknown>[] = [];
  const log = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line)) });
  const z = await startRuntime(
    `${peers.upstreams()}
listeners:
  - { name: t, protocol: tcp, listen: 127.0.0.1:0, upstream: echo, limits: { max_connections: 1 } }
  - { name: h, protocol: http, listen: 127.0.0.1:0, upstream: web, limits: { max_connections: 1 } }
  - { name: p, protocol: socks5, listen: 127.0.0.1:0, allow: ['127.0.0.1:*'], limits: { max_connections: 1 } }
`,
    { log },
  );
  const GET = 'GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n';
  const SOCKS_HELLO = '\x05\x01\x00';
  try {
    for (const [name, first, answered] of [
      ['t', 'echo me', 'echo me'],
      ['h', GET, 'HTTP/1.1 200 '],
      ['p', SOCKS_HELLO, '\x05\x00'],
    ] as const) {
      const listener = z.rt.listeners.get(name);
      assert.ok(listener);
      const held = await hold(z.addr(name));
      await until(() => listener.activeCount() === 1, `${name}: the first connection to be taken`);
      assert.equal(await refusedOrAnswer(z.addr(name), first), '', `${name}: closed without a byte`);
      assert.equal(await refusedOrAnswer(z.addr(name), first), '', `${name}: and the next one too`);
      assert.equal(await overLimit(name), 2, `${name}: both counted`);
      const lines = warnings.filter((w) => w.listener === name && w.code === 'ZL_LISTENER_OVER_LIMIT');
      assert.equal(lines.length, 1, `${name}: one warning within 10 s`);
      assert.equal(lines[0]?.refused, 1);
      assert.equal(lines[0]?.max_connections, 1);
      held.destroy();
      await until(() => listener.activeCount() === 0, `${name}: the held connection to be released`);
      const again = await refusedOrAnswer(z.addr(name), first);
      assert.ok(again.startsWith(answered), `${name}: served again (${JSON.stringify(again)})`);
    }
  } finally {
    for (const c of clients) c.destroy();
    await z.stop();
  }
});
