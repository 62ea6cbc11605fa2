/**
 * The native data path's failures (ZL_PUMP) fall back to the JavaScript data path instead of
 * throwing into a connection's callback: a thread that cannot start, a command that cannot be
 * queued. A scripted binding stands in for the addon (its failures cannot be provoked for real:
 * epoll, eventfd, pthread_create or malloc failing).
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import { type Binding, NativePump } from '../../src/l4/native-pump.js';

const sock = (fd: number): Socket => ({ _handle: { fd } }) as unknown as Socket;
const pumpError = (what: string): Error => Object.assign(new Error(what), { code: 'ZL_PUMP' });

function binding(opts: {
  startFails?: boolean;
  commandFails?: boolean;
}): Binding & { starts: number; commands: number[] } {
  const b = {
    starts: 0,
    commands: [] as number[],
    start(): void {
      b.starts++;
      if (opts.startFails) throw pumpError('cannot start the pump thread');
    },
    command(kind: number): void {
      if (opts.commandFails) throw pumpError('out of memory');
      b.commands.push(kind);
    },
    bindSocket(): [number, number] {
      throw new Error('not in this test');
    },
    udpCounters(): number[] {
      return [];
    },
    sendLatin1(): number {
      throw new Error('not in this test');
    },
    socketError(): number {
      throw new Error('not in this test');
    },
  };
  return b;
}

const client = { onPumpDone(): void {}, onBodyDone(): void {} };

test('a pump thread that cannot start: every caller gets null (JavaScript path), and the start is not retried', () => {
  const b = binding({ startFails: true });
  const pump = new NativePump(b);
  assert.equal(pump.available, true, 'built, not yet started');
  assert.equal(pump.add(client, sock(10), sock(11), 1000), null);
  assert.equal(pump.available, false, 'known unusable after the failed start');
  assert.equal(
    pump.acceptOn(
      { _handle: { fd: 12 } },
      () => {},
      () => {},
    ),
    null,
  );
  assert.equal(pump.body(client, sock(10), sock(11), 1 << 20, 1000, 1000), null);
  assert.throws(() => pump.udpListen({} as never, '127.0.0.1', 0, {} as never), /ZL_PUMP/);
  assert.equal(b.starts, 1);
});

test('a command that cannot be queued: that connection gets null, the next one is tried again', () => {
  const b = binding({ commandFails: true });
  const pump = new NativePump(b);
  assert.equal(pump.add(client, sock(10), sock(11), 1000), null);
  assert.equal(
    pump.acceptOn(
      { _handle: { fd: 12 } },
      () => {},
      () => {},
    ),
    null,
  );
  assert.equal(pump.body(client, sock(10), sock(11), 1 << 20, 1000, 1000), null);
  assert.equal(pump.available, true, 'the thread runs; only those commands failed');
  const ok = binding({});
  const healthy = new NativePump(ok);
  const id = healthy.add(client, sock(10), sock(11), 1000);
  assert.equal(typeof id, 'number', 'the same calls succeed when the binding does');
  assert.equal(ok.starts, 1);
  assert.equal(ok.commands.length, 1);
});
