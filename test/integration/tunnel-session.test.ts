/**
 * Tunnel sessions over a real loopback TCP connection: many streams at once with their bytes
 * intact, a stalled reader that slows only its own stream (flow control), half-close, reset,
 * PING RTT, a fatal protocol error answered with GOAWAY and its code, and liveness.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { metrics } from '../../src/metrics/catalog.js';
import { ADDRESS, ERROR, FRAME, OPEN_KIND, OPEN_STATUS } from '../../src/tunnel/constants.js';
import { FrameDecoder } from '../../src/tunnel/frame.js';
import { TunnelSession } from '../../src/tunnel/session.js';
import type { TunnelStream } from '../../src/tunnel/stream.js';

const cleanup: (() => void)[] = [];
after(() => {
  for (const c of cleanup) c();
});

const DEST = Buffer.from([ADDRESS.IPV4, 127, 0, 0, 1, 0x1f, 0x90]);

/** An agent session and a relay session joined by a loopback TCP connection. */
async function pair(
  onStream: (s: TunnelStream, relay: TunnelSession) => void,
  opts: { pingIntervalMs?: number } = {},
): Promise<{ agent: TunnelSession; relay: TunnelSession }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = connect((server.address() as { port: number }).port, '127.0.0.1');
  await once(client, 'connect');
  const [sock] = await accepted;
  server.close();
  const agent = new TunnelSession(client, { role: 'agent', ...opts });
  const relay = new TunnelSession(sock, { role: 'relay', ...opts });
  relay.on('stream', (s: TunnelStream) => onStream(s, relay));
  cleanup.push(() => {
    agent.close();
    relay.close();
  });
  return { agent, relay };
}

function echo(s: TunnelStream, relay: TunnelSession): void {
  relay.answer(s, OPEN_STATUS.OK);
  s.pipe(s);
}

function readAll(s: TunnelStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('tunnel session', () => {
  test('50 streams at once echo 200 KiB each, intact', async () => {
    const { agent, relay } = await pair(echo);
    const results = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const s = await agent.open(OPEN_KIND.TCP, DEST);
        const data = randomBytes(200 * 1024);
        const back = readAll(s);
        s.end(data);
        return [sha(data), sha(await back)];
      }),
    );
    for (const [sent, got] of results) assert.equal(got, sent);
    assert.ok(agent.streams.size === 0 || [...agent.streams.values()].every((s) => s.destroyed || s.done));
    assert.equal(relay.closed, false);
  });

  test('a refused OPEN rejects with its status', async () => {
    const { agent } = await pair((s, relay) => relay.answer(s, OPEN_STATUS.NOT_ALLOWED));
    await assert.rejects(
      agent.open(OPEN_KIND.TCP, DEST),
      (e: Error & { openStatus?: number }) => e.openStatus === 2,
    );
  });

  test('one stalled reader slows only its own stream; what it holds stays within its window', async () => {
    let stalled: TunnelStream | undefined;
    const { agent } = await pair((s, relay) => {
      relay.answer(s, OPEN_STATUS.OK);
      if (stalled === undefined) {
        stalled = s; // never read
        return;
      }
      s.pipe(s);
    });
    const slow = await agent.open(OPEN_KIND.TCP, DEST);
    const big = randomBytes(4 * 1024 * 1024);
    slow.write(big); // far more than a window: it must stop at the window
    const others = await Promise.all(
      Array.from({ length: 9 }, async () => {
        const s = await agent.open(OPEN_KIND.TCP, DEST);
        const data = randomBytes(1024 * 1024);
        const back = readAll(s);
        s.end(data);
        return sha(data) === sha(await back);
      }),
    );
    assert.deepEqual(new Set(others), new Set([true]));
    const held = (stalled as TunnelStream).readableLength;
    assert.ok(held <= 256 * 1024, `the stalled stream holds ${held} bytes (window 256 KiB)`);
    assert.ok(slow.writableLength + slow.queuedBytes > 0, 'the sender is held back, not buffered away');
  });

  test('half-close both ways, and a reset reaches the other side', async () => {
    let relaySide: TunnelStream | undefined;
    const { agent } = await pair((s, relay) => {
      relay.answer(s, OPEN_STATUS.OK);
      relaySide = s;
    });
    const s = await agent.open(OPEN_KIND.TCP, DEST);
    s.end('request');
    const r = relaySide as TunnelStream;
    const req = await readAll(r);
    assert.equal(req.toString(), 'request');
    const resp = readAll(s);
    r.end('response after the peer half-closed');
    assert.equal((await resp).toString(), 'response after the peer half-closed');
    const s2 = await agent.open(OPEN_KIND.TCP, DEST);
    const r2 = relaySide as TunnelStream;
    const errored = once(r2, 'error') as Promise<[Error & { code?: string; tunnelCode?: number }]>;
    s2.destroy();
    const [err] = await errored;
    assert.equal(err.code, 'ZL_TUNNEL_RESET');
    assert.equal(err.tunnelCode, ERROR.CANCEL);
  });

  test('PING measures the round trip', async () => {
    const { agent } = await pair(echo);
    const rtt = once(agent, 'rtt') as Promise<[number]>;
    agent.ping();
    const [ms] = await rtt;
    assert.ok(ms >= 0 && ms < 1000, `rtt ${ms} ms`);
  });

  test('garbage on the connection: GOAWAY with PROTOCOL_ERROR, then close; a silent peer: IDLE_TIMEOUT', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanup.push(() => server.close());
    const accepted = once(server, 'connection') as Promise<[Socket]>;
    const raw = connect((server.address() as { port: number }).port, '127.0.0.1');
    await once(raw, 'connect');
    const [sock] = await accepted;
    const relay = new TunnelSession(sock, { role: 'relay', pingIntervalMs: 50, misses: 3 });
    const frames: { type: number; payload: Buffer }[] = [];
    const d = new FrameDecoder((type, _f, _s, payload) =>
      frames.push({ type, payload: Buffer.from(payload) }),
    );
    raw.on('data', (c: Buffer) => d.feed(c));
    const fatal = once(relay, 'fatal') as Promise<[number, string]>;
    raw.write('GET / HTTP/1.1\r\n\r\n');
    const [code] = await fatal;
    assert.equal(code, ERROR.PROTOCOL_ERROR);
    await once(raw, 'end');
    const goaway = frames.find((f) => f.type === FRAME.GOAWAY);
    assert.ok(goaway);
    assert.equal(goaway.payload.readUInt32BE(4), ERROR.PROTOCOL_ERROR);
    const counted = (await metrics.tunnelProtocolErrors.get()).values.find(
      (v) => v.labels.code === 'PROTOCOL_ERROR',
    );
    assert.ok((counted?.value ?? 0) >= 1, 'zipline_tunnel_protocol_errors_total{code="PROTOCOL_ERROR"}');
    raw.destroy();

    // a peer that says nothing at all: dead after misses × interval
    const accepted2 = once(server, 'connection') as Promise<[Socket]>;
    const quiet = connect((server.address() as { port: number }).port, '127.0.0.1');
    cleanup.push(() => quiet.destroy());
    const [sock2] = await accepted2;
    const t0 = Date.now();
    const relay2 = new TunnelSession(sock2, { role: 'relay', pingIntervalMs: 50, misses: 3 });
    const [idle] = (await once(relay2, 'fatal')) as [number];
    assert.equal(idle, ERROR.IDLE_TIMEOUT);
    const took = Date.now() - t0;
    assert.ok(took >= 150 && took < 1000, `declared dead after ${took} ms`);
  });
});
