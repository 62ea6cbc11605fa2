/**
 * One suite, every tunnel session implementation and transport (testing.md "conformance"): the
 * JavaScript session (src/tunnel/session.ts) and the native engine (src/tunnel/native/, Linux,
 * when built), each as agent and as relay against either, over plain TCP and over TLS 1.3, on
 * real loopback connections. Mixed pairs are the wire test: each side only knows the spec.
 * Covered: many streams with their bytes intact, refusal, a stalled reader that slows only its own
 * stream, half-close and reset, PING RTT, garbage answered with GOAWAY and its code, liveness, the
 * TLS channel binding both sides must agree on, zstd between the two, and (native) streams
 * attached to sockets: bytes, half-close, reset, idle timeout.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { createSecureContext, TLSSocket, connect as tlsConnect } from 'node:tls';
import { metrics } from '../../src/metrics/catalog.js';
import { pipeStream } from '../../src/proxy/pipe.js';
import { zstdAvailable } from '../../src/tunnel/compression.js';
import { ADDRESS, ERROR, FLAG, FRAME, OPEN_KIND, OPEN_STATUS } from '../../src/tunnel/constants.js';
import { encodeFrame, FrameDecoder } from '../../src/tunnel/frame.js';
import { engine } from '../../src/tunnel/native/binding.js';
import { NativeSession, tlsContext } from '../../src/tunnel/native/native-session.js';
import { type SessionOptions, TunnelSession } from '../../src/tunnel/session.js';
import type { SessionApi, SessionStream } from '../../src/tunnel/session-api.js';
import { fingerprintOf } from '../../src/tunnel/tls.js';
import { closed, port, readAll as readSocket, socketPair, tcpEcho, until } from '../helpers/net.js';
import { rng } from '../helpers/rng.js';
import { ROOT } from '../helpers/zipline.js';

type Impl = 'js' | 'native';
const cleanup: (() => void)[] = [];
after(() => {
  for (const c of cleanup) c();
});

const DEST = Buffer.from([ADDRESS.IPV4, 127, 0, 0, 1, 0x1f, 0x90]);
const CERT = readFileSync(join(ROOT, 'test/fixtures/tls/a.crt'), 'utf8');
const KEY = readFileSync(join(ROOT, 'test/fixtures/tls/a.key'), 'utf8');
const CIPHERS = 'TLS_CHACHA20_POLY1305_SHA256';

let nativeServerCtx = 0;
let nativeClientCtx = 0;

/** A session of `impl` over a connected socket, TLS (the fixture certificate) when `tls`. */
async function session(impl: Impl, sock: Socket, opts: SessionOptions, tls: boolean): Promise<SessionApi> {
  const server = opts.role === 'relay';
  if (impl === 'native') {
    let ctx = 0;
    if (tls && server) ctx = nativeServerCtx ||= tlsContext(true, { cert: CERT, key: KEY, ciphers: CIPHERS });
    if (tls && !server) ctx = nativeClientCtx ||= tlsContext(false, { ciphers: CIPHERS });
    const s = NativeSession.start(sock, opts, tls ? { ctx } : null);
    await s.handshake(5000);
    return s;
  }
  if (!tls) return new TunnelSession(sock, opts);
  if (server) {
    const t = new TLSSocket(sock, {
      isServer: true,
      secureContext: createSecureContext({ cert: CERT, key: KEY, ciphers: CIPHERS, minVersion: 'TLSv1.3' }),
    });
    await once(t, 'secure');
    return new TunnelSession(t, opts);
  }
  const t = tlsConnect({ socket: sock, rejectUnauthorized: false, minVersion: 'TLSv1.3', ciphers: CIPHERS });
  await once(t, 'secureConnect');
  return new TunnelSession(t, opts);
}

/** An agent session and a relay session of the given implementations, joined on loopback. */
async function pair(
  impls: [Impl, Impl],
  onStream: (s: SessionStream, relay: SessionApi) => void,
  opts: { tls?: boolean; pingIntervalMs?: number; compression?: boolean } = {},
): Promise<{ agent: SessionApi; relay: SessionApi }> {
  const [a, r] = await socketPair();
  const o = opts.pingIntervalMs !== undefined ? { pingIntervalMs: opts.pingIntervalMs } : {};
  const [agent, relay] = await Promise.all([
    session(impls[0], a, { role: 'agent', ...o }, opts.tls === true),
    session(impls[1], r, { role: 'relay', ...o }, opts.tls === true),
  ]);
  const peer = { maxPayload: 16384, initialWindow: 256 * 1024, connectionWindow: 32 << 20 };
  agent.compression = opts.compression === true;
  relay.compression = opts.compression === true;
  agent.setPeer(peer);
  relay.setPeer(peer);
  relay.on('stream', (s: SessionStream) => onStream(s, relay));
  cleanup.push(() => {
    agent.destroy();
    relay.destroy();
  });
  return { agent, relay };
}

function echo(s: SessionStream, relay: SessionApi): void {
  relay.answer(s, OPEN_STATUS.OK);
  s.on('error', () => {}); // a reset from the other side ends it (pipe() alone would rethrow)
  s.pipe(s);
}

function readAll(s: SessionStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

const impls: Impl[] = engine.available ? ['js', 'native'] : ['js'];
const combos: [Impl, Impl][] = impls.flatMap((a) => impls.map((r) => [a, r] as [Impl, Impl]));

for (const combo of combos) {
  const name = `agent ${combo[0]} ↔ relay ${combo[1]}`;
  describe(name, () => {
    for (const tls of [false, true]) {
      test(`${tls ? 'TLS' : 'plain'}: 50 streams at once echo 200 KiB each, intact`, async () => {
        const { agent, relay } = await pair(combo, echo, { tls });
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
        assert.equal(relay.closed, false);
        if (tls) assert.ok(agent.binding().equals(relay.binding()), 'both sides derive the same binding');
        if (tls) assert.ok(!agent.binding().equals(Buffer.alloc(32)), 'a real exporter, not zeros');
      });
    }

    test('a refused OPEN rejects with its status', async () => {
      const { agent } = await pair(combo, (s, relay) => relay.answer(s, OPEN_STATUS.NOT_ALLOWED));
      await assert.rejects(
        agent.open(OPEN_KIND.TCP, DEST),
        (e: Error & { openStatus?: number }) => e.openStatus === 2,
      );
    });

    test('one stalled reader slows only its own stream; its sender is held back', async () => {
      let stalled: SessionStream | undefined;
      const { agent } = await pair(combo, (s, relay) => {
        relay.answer(s, OPEN_STATUS.OK);
        if (stalled === undefined) {
          stalled = s; // never read
          return;
        }
        s.pipe(s);
      });
      const slow = await agent.open(OPEN_KIND.TCP, DEST);
      slow.write(randomBytes(4 * 1024 * 1024)); // far more than a window: it must stop at the window
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
      assert.ok(slow.writableLength > 0, 'the sender is held back, not buffered away');
      if (combo[1] === 'js') {
        const held = (stalled as SessionStream).readableLength;
        assert.ok(held <= 256 * 1024, `the stalled stream holds ${held} bytes (window 256 KiB)`);
      }
    });

    test('half-close both ways, and a reset reaches the other side', async () => {
      let relaySide: SessionStream | undefined;
      const { agent } = await pair(combo, (s, relay) => {
        relay.answer(s, OPEN_STATUS.OK);
        relaySide = s;
      });
      const s = await agent.open(OPEN_KIND.TCP, DEST);
      s.end('request');
      const r = relaySide as SessionStream;
      assert.equal((await readAll(r)).toString(), 'request');
      const resp = readAll(s);
      r.end('response after the peer half-closed');
      assert.equal((await resp).toString(), 'response after the peer half-closed');
      const s2 = await agent.open(OPEN_KIND.TCP, DEST);
      const r2 = relaySide as SessionStream;
      const errored = once(r2, 'error') as Promise<[Error & { code?: string; tunnelCode?: number }]>;
      r2.resume();
      s2.destroy();
      const [err] = await errored;
      assert.equal(err.code, 'ZL_TUNNEL_RESET');
      assert.equal(err.tunnelCode, ERROR.CANCEL);
    });

    test('PING measures the round trip; an ACK that echoes no PING of ours is ignored', async () => {
      const { agent, relay } = await pair(combo, echo);
      const seen: number[] = [];
      agent.on('rtt', (ms: number) => seen.push(ms));
      // ACKs no PING of the agent's could have made, sent before the real one's: a timestamp from
      // long before (0), one from the future, a short payload
      for (const p of [Buffer.alloc(8), Buffer.alloc(8, 0xff), Buffer.alloc(7)]) {
        relay.sendControl(FRAME.PING, FLAG.ACK, 0, p);
      }
      const rtt = once(agent, 'rtt') as Promise<[number]>;
      agent.ping();
      const [ms] = await rtt;
      assert.ok(ms >= 0 && ms < 1000, `rtt ${ms} ms`);
      assert.deepEqual(seen, [ms], 'only the echo of our PING counted');
    });

    test('zstd between the two: JSON-like data intact and smaller on the wire', {
      skip: zstdAvailable && (combo.every((i) => i === 'js') || engine.zstd) ? false : 'zstd not built',
    }, async () => {
      const { agent } = await pair(combo, echo, { compression: true });
      const json = Buffer.from(
        JSON.stringify(
          Array.from({ length: 20000 }, (_, i) => ({ id: i, name: `user-${i}`, ok: i % 3 === 0 })),
        ),
      );
      for (let i = 0; i < 2; i++) {
        const s = await agent.open(OPEN_KIND.TCP, DEST);
        const back = readAll(s);
        s.end(json);
        assert.equal(sha(await back), sha(json), `stream ${i} intact`);
      }
      const random = randomBytes(1 << 20);
      const s = await agent.open(OPEN_KIND.TCP, DEST);
      const back = readAll(s);
      s.end(random);
      assert.ok((await back).equals(random), 'random data intact');
      assert.ok(agent.compressOut < agent.compressIn / 2, `${agent.compressOut} of ${agent.compressIn} sent`);
    });
  });
}

for (const impl of impls) {
  test(`${impl} relay: garbage is answered with GOAWAY PROTOCOL_ERROR, then close; a silent peer: IDLE_TIMEOUT`, async () => {
    const [raw, sock] = await socketPair();
    cleanup.push(() => raw.destroy());
    const relay = await session(impl, sock, { role: 'relay', pingIntervalMs: 50, misses: 3 }, false);
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
    const [quiet, sock2] = await socketPair();
    cleanup.push(() => quiet.destroy());
    const t0 = Date.now();
    const relay2 = await session(impl, sock2, { role: 'relay', pingIntervalMs: 50, misses: 3 }, false);
    const [idle] = (await once(relay2, 'fatal')) as [number];
    assert.equal(idle, ERROR.IDLE_TIMEOUT);
    const took = Date.now() - t0;
    // both clocks count whole milliseconds (the engine truncates CLOCK_MONOTONIC to ms), so 150
    // can read as 149
    assert.ok(took >= 149 && took < 1000, `declared dead after ${took} ms`);
  });
}

for (const impl of impls) {
  test(`${impl} relay: a session's frames reach zipline_tunnel_frames_total when it ends, with no scrape while it lived`, async () => {
    const counted = async (): Promise<number> =>
      (await metrics.tunnelFrames.get()).values.find(
        (v) => v.labels.type === 'window_update' && v.labels.direction === 'in',
      )?.value ?? 0;
    const before = await counted();
    const [raw, sock] = await socketPair();
    cleanup.push(() => raw.destroy());
    const relay = await session(impl, sock, { role: 'relay' }, false);
    relay.setPeer({ maxPayload: 16384, initialWindow: 256 * 1024, connectionWindow: 32 << 20 });
    const delta = Buffer.alloc(4);
    delta.writeUInt32BE(1);
    const update = encodeFrame(FRAME.WINDOW_UPDATE, 0, 0, delta);
    raw.end(Buffer.concat([update, update, update, update, update]));
    await once(relay, 'close');
    await until(async () => (await counted()) === before + 5, '5 WINDOW_UPDATEs counted');
  });

  test(`${impl} relay: frames after a fatal one in the same read are not acted on (no OPEN after it)`, async () => {
    const [raw, sock] = await socketPair();
    cleanup.push(() => raw.destroy());
    raw.on('data', () => {});
    const relay = await session(impl, sock, { role: 'relay' }, false);
    relay.setPeer({ maxPayload: 16384, initialWindow: 256 * 1024, connectionWindow: 32 << 20 });
    const opened: number[] = [];
    relay.on('stream', (s: SessionStream) => opened.push(s.id));
    const fatal = once(relay, 'fatal') as Promise<[number, string]>;
    const closed = once(relay, 'close');
    // the session finds the second OPEN fatal (an even id is the relay's own); the OPEN behind
    // it, in the same write, comes too late
    const open = (id: number): Buffer =>
      encodeFrame(FRAME.OPEN, 0, id, Buffer.concat([Buffer.from([OPEN_KIND.TCP]), DEST]));
    raw.write(Buffer.concat([open(1), open(2), open(3)]));
    const [code] = await fatal;
    assert.equal(code, ERROR.PROTOCOL_ERROR);
    await closed;
    await once(raw, 'end');
    assert.deepEqual(opened, [1], 'only the OPEN before the fatal frame');
    assert.equal(relay.streams.size, 0);
  });

  test(`${impl} relay: DATA on a stream after its FIN is a PROTOCOL_ERROR for the session`, async () => {
    const [raw, sock] = await socketPair();
    cleanup.push(() => raw.destroy());
    raw.on('data', () => {});
    const relay = await session(impl, sock, { role: 'relay' }, false);
    relay.setPeer({ maxPayload: 16384, initialWindow: 256 * 1024, connectionWindow: 32 << 20 });
    relay.on('stream', (s: SessionStream) => s.resume());
    const fatal = once(relay, 'fatal') as Promise<[number, string]>;
    raw.write(
      Buffer.concat([
        encodeFrame(FRAME.OPEN, 0, 1, Buffer.concat([Buffer.from([OPEN_KIND.TCP]), DEST])),
        encodeFrame(FRAME.DATA, FLAG.FIN, 1, Buffer.from('last')),
        encodeFrame(FRAME.DATA, 0, 1, Buffer.from('after the last')),
      ]),
    );
    const [code, reason] = await fatal;
    assert.equal(code, ERROR.PROTOCOL_ERROR);
    assert.match(reason, /DATA after FIN on stream 1/);
  });
}

for (const impl of impls) {
  test(`${impl} relay: a recorded session written in random cuts (1-byte writes among them) decodes as sent`, async () => {
    const [raw, sock] = await socketPair();
    cleanup.push(() => raw.destroy());
    raw.setNoDelay(true);
    const relay = await session(impl, sock, { role: 'relay' }, false);
    relay.setPeer({ maxPayload: 16384, initialWindow: 256 * 1024, connectionWindow: 32 << 20 });
    const got = new Map<number, Promise<Buffer>>();
    relay.on('stream', (st: SessionStream) => {
      relay.answer(st, OPEN_STATUS.OK);
      got.set(st.id, readAll(st));
    });
    // the recording: 12 streams, DATA of every size up to the max payload, FIN on the last
    const r = rng(11);
    const sent = new Map<number, Buffer>();
    const parts: Buffer[] = [];
    for (let id = 1; id < 24; id += 2) {
      parts.push(encodeFrame(FRAME.OPEN, 0, id, Buffer.from([OPEN_KIND.TCP, ...DEST])));
      const chunks = Array.from({ length: 1 + Math.floor(r() * 4) }, () =>
        randomBytes(Math.floor(r() * 16384)),
      );
      for (const [i, c] of chunks.entries())
        parts.push(encodeFrame(FRAME.DATA, i === chunks.length - 1 ? FLAG.FIN : 0, id, c));
      parts.push(encodeFrame(0x9a, 0, 0, Buffer.from('an extension, skipped')));
      sent.set(id, Buffer.concat(chunks));
    }
    const bytes = Buffer.concat(parts);
    for (let at = 0; at < bytes.length; ) {
      // mostly small pieces, some single bytes, some whole frames' worth
      const n = r() < 0.2 ? 1 : 1 + Math.floor(r() * (r() < 0.5 ? 64 : 20_000));
      raw.write(bytes.subarray(at, at + n));
      at += n;
      await new Promise((done) => setImmediate(done));
    }
    await until(() => got.size === sent.size, 'every stream opened');
    for (const [id, data] of sent)
      assert.equal(sha(await (got.get(id) as Promise<Buffer>)), sha(data), `stream ${id}`);
    assert.equal(relay.closed, false);
  });
}

describe('native: streams attached to sockets', {
  skip: engine.available ? false : 'native engine not built',
}, () => {
  /** An agent stream attached to a local socket pair's server side, to a relay stream echoed in JS. */
  async function attached(
    relayImpl: Impl,
    onStream: (s: SessionStream, relay: SessionApi) => void,
    idleMs = 0,
  ): Promise<{ client: Socket; result: Promise<{ fromSocket: number; toSocket: number; error: unknown }> }> {
    const { agent } = await pair(['native', relayImpl], onStream);
    const stream = await agent.open(OPEN_KIND.TCP, DEST);
    const [client, local] = await socketPair();
    cleanup.push(() => client.destroy());
    const result = new Promise<{ fromSocket: number; toSocket: number; error: unknown }>((resolve) =>
      pipeStream(stream, local, idleMs, resolve),
    );
    return { client, result };
  }

  for (const relayImpl of impls) {
    test(`to a ${relayImpl} relay: 8 MiB both ways intact, half-close forwarded, the socket's counts reported`, async () => {
      const { client, result } = await attached(relayImpl, echo);
      const data = randomBytes(8 << 20);
      const back = readSocket(client);
      client.end(data);
      assert.equal(sha(await back), sha(data));
      await closed(client);
      const r = await result;
      assert.equal(r.error, null);
      assert.equal(r.fromSocket, data.length);
      assert.equal(r.toSocket, data.length);
    });
  }

  test('a peer reset resets the socket; an idle stream is closed at its timeout', async () => {
    let relaySide: SessionStream | undefined;
    const { client, result } = await attached('js', (s, relay) => {
      relay.answer(s, OPEN_STATUS.OK);
      relaySide = s;
    });
    client.write('x');
    await until(() => relaySide?.readableLength, 'the byte reached the relay');
    relaySide?.destroy();
    const err = await closed(client);
    assert.equal(err?.code, 'ECONNRESET');
    assert.equal((await result).error, 'ZL_TUNNEL_RESET');

    const idle = await attached('js', echo, 200);
    const t0 = Date.now();
    await closed(idle.client);
    assert.equal((await idle.result).error, 'idle_timeout');
    assert.ok(Date.now() - t0 >= 150, 'not before the timeout');
  });

  test('an origin through an attached stream: a real TCP echo behind a relay-side attach', async () => {
    const origin = await tcpEcho();
    cleanup.push(() => origin.close());
    const { agent } = await pair(['native', 'native'], (s, relay) => {
      relay.answer(s, OPEN_STATUS.OK);
      const up = connect({ port: port(origin), host: '127.0.0.1', allowHalfOpen: true }, () =>
        pipeStream(s, up, 0, () => {}),
      );
    });
    const s = await agent.open(OPEN_KIND.TCP, DEST);
    const data = randomBytes(3 << 20);
    const back = readAll(s);
    s.end(data);
    assert.equal(sha(await back), sha(data));
  });

  test('a pinned fingerprint: the engine reports the relay certificate SHA-256', async () => {
    const [a, r] = await socketPair();
    const [agent, relay] = await Promise.all([
      session('native', a, { role: 'agent' }, true),
      session('js', r, { role: 'relay' }, true),
    ]);
    cleanup.push(() => {
      agent.destroy();
      relay.destroy();
    });
    assert.equal(`sha256:${(agent as NativeSession).tls?.fingerprint}`, fingerprintOf(CERT));
  });
});
