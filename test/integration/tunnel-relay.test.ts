/**
 * The relay under attack and the agent's data paths, in one process (real loopback sockets):
 * malformed frames each end only their own session with the right GOAWAY code and a metric while
 * a real agent keeps working; a second session with the same agent id replaces the first;
 * failed authentication is rate-limited per address; no payload byte is visible on the wire with
 * TLS; UDP through a forward and SOCKS5 UDP ASSOCIATE; zstd; 10,000 streams leave nothing behind.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { loadConfigText } from '../../src/config/load.js';
import { zstdAvailable } from '../../src/tunnel/compression.js';
import { ERROR, FRAME, OPEN_STATUS } from '../../src/tunnel/constants.js';
import { encodeFrame, FrameDecoder } from '../../src/tunnel/frame.js';
import { encodeHello } from '../../src/tunnel/handshake.js';
import { engine } from '../../src/tunnel/native/binding.js';
import { fingerprintOf } from '../../src/tunnel/tls.js';
import { have, run } from '../helpers/daemons.js';
import { renderDashboard } from '../helpers/dashboard.js';
import { rawRequest } from '../helpers/http.js';
import { seriesValue } from '../helpers/metrics.js';
import {
  closeServer,
  endOf,
  listen,
  openFds,
  port,
  RESETS_TOLD,
  splitAddress,
  tcpEcho,
  udpEcho,
  until,
} from '../helpers/net.js';
import { tempDir } from '../helpers/temp.js';
import { helloAckFrame, relayYaml, TUNNEL_TOKEN } from '../helpers/tunnel.js';
import { ROOT, startRuntime } from '../helpers/zipline.js';

const TOKEN = TUNNEL_TOKEN;
const cleanup: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

function agentYaml(relay: string, body: string, relayExtra: string): string {
  return `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 1s
tunnel:
  agent:
    id: agent-under-test
    relays: [{ address: "${relay}", ${relayExtra} }]
    token: "${TOKEN}"
    connect_timeout: 5s
    heartbeat: { interval: 500ms, misses: 3 }
${body}`;
}

/** A relay and an agent runtime; with `tls`, the agent pins the relay's `tls: auto` certificate. */
async function startPair(
  agentBody: string,
  opts: { tls?: boolean; agent?: string; relay?: string; relayAddr?: (a: string) => Promise<string> } = {},
) {
  const relay = await startRuntime(relayYaml(opts.relay ?? '', opts.tls === true ? 'auto' : 'off'));
  cleanup.push(() => relay.stop());
  const relayAddr = relay.rt.relay?.address() ?? '';
  const ref = opts.tls === true ? `fingerprint: "${relay.rt.relay?.fingerprint}"` : 'tls: false';
  const target = opts.relayAddr ? await opts.relayAddr(relayAddr) : relayAddr;
  const agent = await startRuntime(agentYaml(target, `${opts.agent ?? ''}\n${agentBody}`, ref));
  cleanup.push(() => agent.stop());
  await until(() => agent.rt.agent?.links[0]?.state === 'up', 'agent session up');
  const entry = (name: string): string => agent.rt.agent?.addresses()[name] ?? '';
  return { relay, agent, relayAddr, entry };
}

/** A client of the agent's UDP forward `udp[index]`: what it receives is kept in `replies`. */
function forwardClient(agent: Awaited<ReturnType<typeof startPair>>['agent'], index = 0) {
  const client = createSocket('udp4');
  cleanup.push(() => {
    client.close();
  });
  const replies: Buffer[] = [];
  client.on('message', (m) => replies.push(m));
  const [host, p] = splitAddress(agent.rt.agent?.addresses()[`udp[${index}]`] ?? '');
  return { client, replies, send: (text: string) => client.send(text, p, host) };
}

/**
 * A raw client speaking frames to a plain relay: HELLO (valid or not), then whatever the test
 * sends. Frames received are kept in `frames`, or given to `onFrame` instead (nothing kept).
 */
async function rawSession(
  relayAddr: string,
  agentId: string,
  token = TOKEN,
  onFrame?: (type: number) => void,
): Promise<{ sock: Socket; frames: { type: number; payload: Buffer }[]; closed: Promise<void> }> {
  const [h, p] = splitAddress(relayAddr);
  const sock = connect(p, h);
  await new Promise((r) => sock.once('connect', r));
  const frames: { type: number; payload: Buffer }[] = [];
  const dec = new FrameDecoder(
    (type, _f, _id, payload) =>
      onFrame === undefined ? frames.push({ type, payload: Buffer.from(payload) }) : onFrame(type),
    65536,
  );
  sock.on('data', (c: Buffer) => {
    try {
      dec.feed(c);
    } catch {
      // the test inspects frames only
    }
  });
  sock.on('error', () => {});
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  const hello = encodeHello(
    { agentId, codecs: 0, want: 0, maxPayload: 16384, initialWindow: 262144, connectionWindow: 32 << 20 },
    token,
    Buffer.alloc(32),
  );
  sock.write(encodeFrame(FRAME.HELLO, 0, 0, hello));
  return { sock, frames, closed };
}

const goawayCode = (frames: { type: number; payload: Buffer }[]): number | undefined =>
  frames.find((f) => f.type === FRAME.GOAWAY)?.payload.readUInt32BE(4);

const metricValue = (name: string, labels: string): Promise<number> => seriesValue(`${name}{${labels}}`);

describe('the relay under attack', () => {
  test('each malformed frame ends only its own session, with the right GOAWAY code and a metric', async () => {
    const echo = await tcpEcho();
    cleanup.push(() => closeServer(echo));
    const { relayAddr, entry } = await startPair(
      `    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(echo)} }]`,
    );
    const [fh, fp] = splitAddress(entry('forwards[0]'));
    const roundTrip = async (): Promise<string> => {
      const s = connect(fp, fh);
      s.end('still-working');
      let out = '';
      for await (const c of s) out += String(c);
      return out;
    };
    assert.equal(await roundTrip(), 'still-working');
    const frame = (type: number, id: number, payload: Buffer): Buffer => encodeFrame(type, 0, id, payload);
    const badCrc = frame(FRAME.PING, 0, Buffer.alloc(8));
    badCrc.writeUInt32BE(badCrc.readUInt32BE(badCrc.length - 4) ^ 1, badCrc.length - 4);
    const huge = Buffer.alloc(12);
    huge.writeUInt16BE(0x4d53, 0);
    huge.writeUInt32BE(0x7fff_0000, 2); // a length far over any limit, before any allocation
    huge[6] = FRAME.DATA;
    huge.writeUInt32BE(1, 8);
    const u32 = (v: number): Buffer => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(v);
      return b;
    };
    const attacks: [string, Buffer, number, string][] = [
      ['bad magic', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), ERROR.PROTOCOL_ERROR, 'PROTOCOL_ERROR'],
      ['bad CRC', badCrc, ERROR.CRC_ERROR, 'CRC_ERROR'],
      ['oversized length', huge, ERROR.FRAME_SIZE_ERROR, 'FRAME_SIZE_ERROR'],
      ['unknown core type', frame(0x30, 0, Buffer.alloc(0)), ERROR.PROTOCOL_ERROR, 'PROTOCOL_ERROR'],
      [
        'connection WINDOW_UPDATE overflow',
        Buffer.concat([
          frame(FRAME.WINDOW_UPDATE, 0, u32(0x7fff_ffff)),
          frame(FRAME.WINDOW_UPDATE, 0, u32(0x7fff_ffff)),
        ]),
        ERROR.FLOW_CONTROL_ERROR,
        'FLOW_CONTROL_ERROR',
      ],
      [
        'WINDOW_UPDATE of 0',
        frame(FRAME.WINDOW_UPDATE, 0, u32(0)),
        ERROR.FLOW_CONTROL_ERROR,
        'FLOW_CONTROL_ERROR',
      ],
    ];
    for (const [what, bytes, code, name] of attacks) {
      const before = await metricValue('zipline_tunnel_protocol_errors_total', `code="${name}"`);
      const raw = await rawSession(relayAddr, `attacker-${what.replaceAll(' ', '-')}`);
      await until(() => raw.frames.some((f) => f.type === FRAME.HELLO_ACK), `${what}: HELLO_ACK`);
      raw.sock.write(bytes);
      await raw.closed;
      assert.equal(goawayCode(raw.frames), code, `${what}: GOAWAY code`);
      assert.equal(
        await metricValue('zipline_tunnel_protocol_errors_total', `code="${name}"`),
        before + 1,
        `${what}: metric`,
      );
      assert.equal(await roundTrip(), 'still-working', `${what}: the real agent's session carries on`);
    }
  });

  test('frames before HELLO, and a second session with the same agent id (REPLACED)', async () => {
    const relay = await startRuntime(relayYaml());
    cleanup.push(() => relay.stop());
    const addr = relay.rt.relay?.address() ?? '';
    const first = await rawSession(addr, 'same-id');
    await until(() => first.frames.some((f) => f.type === FRAME.HELLO_ACK), 'first HELLO_ACK');
    const second = await rawSession(addr, 'same-id');
    await until(() => second.frames.some((f) => f.type === FRAME.HELLO_ACK), 'second HELLO_ACK');
    await first.closed;
    assert.equal(goawayCode(first.frames), ERROR.REPLACED);
    assert.equal(relay.rt.relay?.sessions.size, 1);
    second.sock.destroy();
    // an OPEN before any HELLO is a protocol error
    const [h, p] = splitAddress(addr);
    const s = connect(p, h);
    const got: number[] = [];
    const dec = new FrameDecoder((t, _f, _i, pl) => {
      if (t === FRAME.GOAWAY) got.push(pl.readUInt32BE(4));
    }, 65536);
    s.on('data', (c: Buffer) => dec.feed(c));
    s.write(encodeFrame(FRAME.OPEN, 0, 1, Buffer.from([1, 1, 127, 0, 0, 1, 0, 80])));
    await new Promise((r) => s.once('close', r));
    assert.deepEqual(got, [ERROR.PROTOCOL_ERROR]);
  });

  test('wrong tokens: AUTH_FAILED, and after 5 failures the address is shut out for a while', async () => {
    const relay = await startRuntime(relayYaml());
    cleanup.push(() => relay.stop());
    const addr = relay.rt.relay?.address() ?? '';
    for (let i = 0; i < 5; i++) {
      const raw = await rawSession(addr, 'guesser', `wrong-token-${i}-padding-padding`);
      await raw.closed;
      assert.equal(goawayCode(raw.frames), ERROR.AUTH_FAILED, `attempt ${i}`);
    }
    // even the right token is not heard now: the connection is closed before any frame
    const blocked = await rawSession(addr, 'guesser');
    await blocked.closed;
    assert.equal(blocked.frames.length, 0);
    assert.ok((await metricValue('zipline_tunnel_auth_failures_total', 'reason="rate_limited"')) >= 1);
    assert.equal(relay.rt.relay?.authFailures, 5);
  });

  test('a replayed plain-TCP HELLO is refused', async () => {
    const relay = await startRuntime(relayYaml());
    cleanup.push(() => relay.stop());
    const [h, p] = splitAddress(relay.rt.relay?.address() ?? '');
    const hello = encodeFrame(
      FRAME.HELLO,
      0,
      0,
      encodeHello(
        {
          agentId: 'replay',
          codecs: 0,
          want: 0,
          maxPayload: 16384,
          initialWindow: 262144,
          connectionWindow: 32 << 20,
        },
        TOKEN,
        Buffer.alloc(32),
      ),
    );
    const codes: (number | undefined)[] = [];
    for (let i = 0; i < 2; i++) {
      const s = connect(p, h);
      const frames: { type: number; payload: Buffer }[] = [];
      const dec = new FrameDecoder(
        (type, _f, _id, payload) => frames.push({ type, payload: Buffer.from(payload) }),
        65536,
      );
      s.on('data', (c: Buffer) => dec.feed(c));
      s.write(hello);
      await until(() => frames.length > 0, 'an answer');
      codes.push(frames[0]?.type === FRAME.HELLO_ACK ? 0 : goawayCode(frames));
      s.destroy();
    }
    assert.deepEqual(codes, [0, ERROR.AUTH_FAILED]);
  });
});

test("a flood of REQUEST frames from an authenticated agent keeps the relay's memory bounded", async () => {
  // every REQUEST is answered by JavaScript; a native relay decodes far faster than that, so it
  // must stop decoding while the event loop is behind, or queue events without bound
  const relay = await startRuntime(relayYaml());
  cleanup.push(() => relay.stop());
  let acked = false;
  let answered = 0; // counted, not kept: this process's memory is what is measured
  const { sock } = await rawSession(relay.rt.relay?.address() ?? '', 'flooder', TOKEN, (type) => {
    if (type === FRAME.HELLO_ACK) acked = true;
    else if (type === FRAME.RESPONSE) answered++;
  });
  cleanup.push(() => {
    sock.destroy();
  });
  await until(() => acked, 'HELLO_ACK');
  const rss = (): number => process.memoryUsage.rss() / 2 ** 20;
  const req = Buffer.alloc(8);
  req.write('load', 4);
  const batch = Buffer.concat(Array.from({ length: 4096 }, () => encodeFrame(FRAME.REQUEST, 0, 0, req)));
  const before = rss();
  let peak = before;
  let sent = 0;
  const t0 = Date.now();
  while (Date.now() - t0 < 2000) {
    if (!sock.write(batch)) await once(sock, 'drain');
    sent += 4096;
    peak = Math.max(peak, rss());
  }
  assert.ok(answered > 0, 'answers came');
  assert.ok(peak - before < 100, `RSS grew ${(peak - before).toFixed(0)} MiB over ${sent} REQUESTs`);
});

test('garbage on a TLS relay port: that connection is closed and counted; the session beside it carries on', async () => {
  const echo = await tcpEcho();
  cleanup.push(() => closeServer(echo));
  const { relayAddr, entry } = await startPair(
    `    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(echo)} }]`,
    {
      tls: true,
    },
  );
  const before = await metricValue('zipline_tunnel_rejected_total', 'reason="tls_handshake"');
  const [h, p] = splitAddress(relayAddr);
  for (const junk of [
    Buffer.from('GET / HTTP/1.1\r\n\r\n'),
    Buffer.alloc(4096, 0xab),
    encodeFrame(FRAME.HELLO, 0, 0, Buffer.alloc(10)),
    // a handshake record announcing 1,000 bytes, 10 sent, then FIN: TLS waits for the rest and
    // never fails; the peer went away mid-handshake all the same (random junk did this now and then)
    Buffer.from([0x16, 0x03, 0x01, 0x03, 0xe8, 1, 0, 0, 0, 0]),
  ]) {
    const s = connect(p, h);
    s.on('error', () => {});
    // read what comes back: some random junk parses as an SSLv2-style hello, which OpenSSL answers
    // with an alert before it closes, and a paused socket never emits 'close'
    s.resume();
    s.end(junk);
    await new Promise((r) => s.once('close', r));
  }
  // the relay counts when TLS gives up, which may come after the client saw its connection close
  await until(
    async () => (await metricValue('zipline_tunnel_rejected_total', 'reason="tls_handshake"')) >= before + 4,
    'four failed handshakes counted',
  );
  assert.equal(await metricValue('zipline_tunnel_rejected_total', 'reason="tls_handshake"'), before + 4);
  const [fh, fp] = splitAddress(entry('forwards[0]'));
  const s = connect(fp, fh);
  s.end('fine');
  let out = '';
  for await (const c of s) out += String(c);
  assert.equal(out, 'fine');
});

test('relay certificate from files, verified by the agent against a CA and a name', async () => {
  const tlsDir = join(ROOT, 'test/fixtures/tls');
  const relay = await startRuntime(
    relayYaml('').replace(
      'tls: off',
      `tls: { cert: ${join(tlsDir, 'a.crt')}, key: ${join(tlsDir, 'a.key')} }`,
    ),
  );
  cleanup.push(() => relay.stop());
  const addr = relay.rt.relay?.address() ?? '';
  const good = await startRuntime(agentYaml(addr, '', `ca: ${join(tlsDir, 'a.crt')}, server_name: a.test`));
  cleanup.push(() => good.stop());
  await until(() => good.rt.agent?.links[0]?.state === 'up', 'the agent verified a.test against its CA');
  const wrong = await startRuntime(agentYaml(addr, '', `ca: ${join(tlsDir, 'a.crt')}, server_name: b.test`));
  cleanup.push(() => wrong.stop());
  await until(
    () => /ZL_TUNNEL_TLS/.test(wrong.rt.agent?.links[0]?.lastError ?? ''),
    'a name mismatch refused',
  );
  assert.notEqual(wrong.rt.agent?.links[0]?.state, 'up');
});

/** A relay runtime with `tls: { cert, key }` from these files, and its config for reloads. */
async function fileTlsRelay(crt: string, key: string) {
  const yaml = relayYaml('').replace('tls: off', `tls: { cert: ${crt}, key: ${key} }`);
  const loaded = loadConfigText(yaml, {});
  assert.ok(loaded.ok);
  const relay = await startRuntime(yaml);
  cleanup.push(() => relay.stop());
  return { relay, config: loaded.config, addr: relay.rt.relay?.address() ?? '' };
}

test("the relay's certificate renewed in place is read again at reload: new sessions get it, open ones stay; a broken one keeps the old", async () => {
  const fixtures = join(ROOT, 'test/fixtures/tls');
  const dir = tempDir('zl-relay-renew-');
  const [crt, key] = [join(dir, 'relay.crt'), join(dir, 'relay.key')];
  const install = (name: string): void => {
    copyFileSync(join(fixtures, `${name}.crt`), crt);
    copyFileSync(join(fixtures, `${name}.key`), key);
  };
  install('a');
  const { relay, config, addr } = await fileTlsRelay(crt, key);
  const [h, p] = splitAddress(addr);
  const served = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const s = tlsConnect({ host: h, port: p, rejectUnauthorized: false });
      s.once('secureConnect', () => {
        resolve(String(s.getPeerCertificate().subject.CN));
        s.destroy();
      });
      s.once('error', reject);
    });
  const agent = await startRuntime(
    agentYaml(addr, '', `ca: ${join(fixtures, 'a.crt')}, server_name: a.test`),
  );
  cleanup.push(() => agent.stop());
  await until(() => agent.rt.agent?.links[0]?.state === 'up', 'a session on the first certificate');
  const session = agent.rt.agent?.links[0]?.session;
  assert.equal(await served(), 'a.test');
  assert.deepEqual((await relay.rt.reload(config)).listeners.changed, [], 'nothing renewed: nothing applied');
  install('b');
  const renewed = await relay.rt.reload(config);
  assert.equal(renewed.result, 'applied', renewed.errors.join('; '));
  assert.deepEqual(renewed.listeners.changed, ['tunnel.relay']);
  assert.equal(await served(), 'b.test');
  assert.equal(relay.rt.relay?.fingerprint, fingerprintOf(readFileSync(join(fixtures, 'b.crt'))));
  assert.equal(agent.rt.agent?.links[0]?.session, session, 'the open session stays');
  // half written (a key that is not a key): refused, the renewed one stays
  writeFileSync(key, 'not a key\n');
  const broken = await relay.rt.reload(config);
  assert.equal(broken.result, 'partial');
  assert.match(broken.errors.join('\n'), /tunnel relay: .*; the previous certificate stays/);
  assert.equal(await served(), 'b.test');
});

test("an agent's CA file renewed in place is read again at reload: the next connection verifies with it", async () => {
  // two certificates for one name from different keys: the relay moves from the first to the second
  const selfsigned = await import('selfsigned');
  const made = () => selfsigned.generate([{ name: 'commonName', value: 'relay.test' }], { keyType: 'ec' });
  const [first, second] = [await made(), await made()];
  const dir = tempDir('zl-agent-ca-');
  const [crt, key, ca] = [join(dir, 'relay.crt'), join(dir, 'relay.key'), join(dir, 'agent-ca.pem')];
  const put = (pems: { cert: string; private: string }): void => {
    writeFileSync(crt, pems.cert);
    writeFileSync(key, pems.private);
  };
  put(first);
  writeFileSync(ca, first.cert);
  const { relay, config: relayConfig, addr } = await fileTlsRelay(crt, key);
  const agentText = agentYaml(
    addr,
    '    reconnect: { base: 20ms, max: 100ms }',
    `ca: ${ca}, server_name: relay.test`,
  );
  const agentCfg = loadConfigText(agentText, {});
  assert.ok(agentCfg.ok);
  const agent = await startRuntime(agentText);
  cleanup.push(() => agent.stop());
  const link = agent.rt.agent?.links[0];
  await until(() => link?.state === 'up', 'verified against the first certificate');
  // the relay moves to the second certificate and the session ends: the agent, still trusting
  // the first, cannot verify it when it reconnects
  put(second);
  assert.deepEqual((await relay.rt.reload(relayConfig)).listeners.changed, ['tunnel.relay']);
  link?.session?.destroy();
  await until(() => /ZL_TUNNEL_TLS/.test(link?.lastError ?? ''), 'the second certificate refused');
  writeFileSync(ca, second.cert);
  const renewed = await agent.rt.reload(agentCfg.config);
  assert.equal(renewed.result, 'applied', renewed.errors.join('; '));
  assert.deepEqual(renewed.listeners.changed, ['tunnel.agent']);
  await until(() => link?.state === 'up', 'verified against the renewed CA file');
  // unreadable: refused, the renewed one stays
  rmSync(ca);
  const broken = await agent.rt.reload(agentCfg.config);
  assert.equal(broken.result, 'partial');
  assert.match(broken.errors.join('\n'), /cannot read the CA file .*; the previous one stays/);
});

test('a session refuses OPENs beyond max_streams with RST REFUSED_STREAM', async () => {
  const relay = await startRuntime(relayYaml('    limits: { max_streams: 2 }'));
  cleanup.push(() => relay.stop());
  const raw = await rawSession(relay.rt.relay?.address() ?? '', 'greedy');
  await until(() => raw.frames.some((f) => f.type === FRAME.HELLO_ACK), 'HELLO_ACK');
  // three OPENs to a port nobody listens on would fail anyway: use the relay's own admin port,
  // which accepts and keeps the streams open
  const admin = Number(new URL(relay.rt.admin.url()).port);
  const dest = Buffer.from([1, 1, 127, 0, 0, 1, admin >> 8, admin & 0xff]);
  for (const id of [1, 3, 5]) raw.sock.write(encodeFrame(FRAME.OPEN, 0, id, dest));
  await until(
    () => raw.frames.filter((f) => f.type === FRAME.OPEN_ACK || f.type === FRAME.RST).length >= 3,
    'three answers',
  );
  const rst = raw.frames.find((f) => f.type === FRAME.RST);
  assert.equal(rst?.payload.readUInt32BE(0), ERROR.REFUSED_STREAM);
  assert.equal(raw.frames.filter((f) => f.type === FRAME.OPEN_ACK && f.payload[0] === 0).length, 2);
  raw.sock.destroy();
});

test('max_sessions: a connection beyond it is closed before any frame, and counted', async () => {
  const relay = await startRuntime(relayYaml('    max_sessions: 1'));
  cleanup.push(() => relay.stop());
  const addr = relay.rt.relay?.address() ?? '';
  const first = await rawSession(addr, 'first');
  await until(() => first.frames.some((f) => f.type === FRAME.HELLO_ACK), 'the first session up');
  const before = await metricValue('zipline_tunnel_rejected_total', 'reason="max_sessions"');
  const second = await rawSession(addr, 'second');
  await second.closed;
  assert.equal(second.frames.length, 0);
  assert.equal(await metricValue('zipline_tunnel_rejected_total', 'reason="max_sessions"'), before + 1);
  first.sock.destroy();
});

for (const native of engine.available ? ['auto', 'off'] : ['off']) {
  test(`max_sessions: connections that never say HELLO cannot keep an agent out, the oldest gives way (relay native: ${native})`, async () => {
    const relay = await startRuntime(relayYaml(`    max_sessions: 2\n    native: ${native}`));
    cleanup.push(() => relay.stop());
    const addr = relay.rt.relay?.address() ?? '';
    const [h, p] = splitAddress(addr);
    // every place held by a connection in its handshake that will never finish it
    const silent: Socket[] = [];
    const silentClosed: Promise<unknown>[] = [];
    for (let i = 0; i < 2; i++) {
      const s = connect(p, h);
      s.on('error', () => {});
      silentClosed.push(once(s, 'close'));
      await once(s, 'connect');
      silent.push(s);
      await until(() => relay.rt.relay?.activeCount() === i + 1, `silent connection ${i + 1} held`);
    }
    const before = await metricValue('zipline_tunnel_rejected_total', 'reason="handshake_displaced"');
    const agent = await rawSession(addr, 'real-agent');
    await until(() => agent.frames.some((f) => f.type === FRAME.HELLO_ACK), 'the agent gets its session');
    await silentClosed[0];
    assert.equal(silent[1]?.closed, false, 'the younger silent connection keeps its place');
    assert.equal(
      await metricValue('zipline_tunnel_rejected_total', 'reason="handshake_displaced"'),
      before + 1,
    );
    agent.sock.destroy();
    for (const s of silent) s.destroy();
  });
}

describe('the agent data paths', () => {
  test('with TLS no payload byte is visible on the wire (and without TLS it is: the check can fail)', async () => {
    const echo = await tcpEcho();
    cleanup.push(() => closeServer(echo));
    const marker = `ZIPLINE-SECRET-${randomBytes(8).toString('hex')}`;
    for (const tls of ['auto', 'off'] as const) {
      let captured = Buffer.alloc(0);
      let tap: Server | null = null;
      const tapped = new Set<Socket>();
      const { entry } = await startPair(
        `    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(echo)} }]`,
        {
          tls: tls === 'auto',
          relayAddr: async (relayAddr) => {
            // a tap between agent and relay records every byte both ways
            const [rh, rp] = splitAddress(relayAddr);
            tap = await listen(
              createServer((c) => {
                const up = connect(rp, rh);
                c.on('data', (d: Buffer) => {
                  captured = Buffer.concat([captured, d]);
                  up.write(d);
                });
                up.on('data', (d: Buffer) => {
                  captured = Buffer.concat([captured, d]);
                  c.write(d);
                });
                c.on('close', () => up.destroy());
                up.on('close', () => c.destroy());
                c.on('error', () => {});
                up.on('error', () => {});
              }),
            );
            // registered before the agent starts, so it runs after the agent has stopped
            const server = tap;
            cleanup.push(() => {
              for (const t of tapped) t.destroy();
              return closeServer(server);
            });
            return `127.0.0.1:${port(tap)}`;
          },
        },
      );
      const [h, p] = splitAddress(entry('forwards[0]'));
      const s = connect(p, h);
      s.end(marker);
      let out = '';
      for await (const c of s) out += String(c);
      assert.equal(out, marker);
      const seen = captured.includes(Buffer.from(marker));
      assert.equal(seen, tls === 'off', `marker ${seen ? 'seen' : 'not seen'} on the wire with tls ${tls}`);
    }
  });

  test('UDP: a forward to a UDP echo, and SOCKS5 UDP ASSOCIATE', async () => {
    const echo = await udpEcho();
    cleanup.push(() => {
      echo.close();
    });
    const { entry, agent } = await startPair(
      `    socks5: 127.0.0.1:0\n    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(echo)}, protocol: udp }]`,
    );
    const { replies, send } = forwardClient(agent);
    for (let i = 0; i < 5; i++) send(`dgram-${i}`);
    await until(() => replies.length === 5, '5 echoed datagrams');
    assert.deepEqual(
      replies.map(String).sort(),
      [0, 1, 2, 3, 4].map((i) => `dgram-${i}`),
    );
    // SOCKS5: greeting, UDP ASSOCIATE, then datagrams with the SOCKS5 UDP header
    const [sh, sp] = splitAddress(entry('socks5'));
    const ctl = connect(sp, sh);
    let reply = Buffer.alloc(0);
    ctl.on('data', (c: Buffer) => {
      reply = Buffer.concat([reply, c]);
    });
    ctl.write(Buffer.from([5, 1, 0]));
    ctl.write(Buffer.from([5, 3, 0, 1, 0, 0, 0, 0, 0, 0]));
    await until(() => reply.length >= 2 + 10, 'UDP ASSOCIATE reply');
    assert.deepEqual([...reply.subarray(2, 4)], [5, 0]);
    const relayPort = reply.readUInt16BE(2 + 8);
    const u = createSocket('udp4');
    cleanup.push(() => {
      u.close();
    });
    const got: Buffer[] = [];
    u.on('message', (m) => got.push(m));
    const head = Buffer.from([0, 0, 0, 1, 127, 0, 0, 1, 0, 0]);
    head.writeUInt16BE(port(echo), 8);
    u.send(Buffer.concat([head, Buffer.from('via-socks5')]), relayPort, '127.0.0.1');
    await until(() => got.length === 1, 'a SOCKS5 UDP reply');
    const m = got[0] as Buffer;
    assert.deepEqual([...m.subarray(0, 4)], [0, 0, 0, 1]);
    assert.equal(m.readUInt16BE(8), port(echo), 'the reply names its source');
    assert.equal(m.subarray(10).toString(), 'via-socks5');
    // another socket of the same host is not the client: its datagram is dropped, and the replies
    // keep going to the client (it was sent before the client's next one, so its echo, had it
    // gone through, would have come back first)
    const stranger = createSocket('udp4');
    cleanup.push(() => {
      stranger.close();
    });
    const strangerGot: Buffer[] = [];
    stranger.on('message', (d) => strangerGot.push(d));
    stranger.send(Buffer.concat([head, Buffer.from('stranger')]), relayPort, '127.0.0.1');
    u.send(Buffer.concat([head, Buffer.from('again')]), relayPort, '127.0.0.1');
    await until(() => got.length === 2, 'the reply to the client');
    assert.equal((got[1] as Buffer).subarray(10).toString(), 'again');
    assert.equal(strangerGot.length, 0, 'nothing for the other socket');
    ctl.destroy();
  });

  test('UDP forward: an association that ended has its access line at the agent too (bytes both ways), as at the relay', async () => {
    const echo = await udpEcho();
    cleanup.push(() => {
      echo.close();
    });
    const { agent } = await startPair(
      `    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(echo)}, protocol: udp }]`,
      { relay: '    udp_idle_timeout: 300ms' },
    );
    const { client, replies, send } = forwardClient(agent);
    for (let i = 0; i < 3; i++) send(`d${i}`);
    await until(() => replies.length === 3, 'the echoes');
    // the relay ends the idle association; the agent's side of it writes its line then
    const line = await until(
      () => agent.access.find((l) => l.protocol === 'tunnel-udp'),
      'the association logged at the agent',
    );
    assert.deepEqual(
      [line?.listener, line?.method, line?.path, line?.status, line?.bytes_in, line?.bytes_out, line?.error],
      ['tunnel.agent.forwards[0]', 'FORWARD', `127.0.0.1:${port(echo)}`, 200, 6, 6, null],
    );
    assert.equal(line?.client_port, client.address().port);
  });

  test('zstd: JSON-like data compresses (ratio in /stats), random data passes intact and stops being compressed', {
    skip: zstdAvailable
      ? false
      : 'the optional zstd-napi module is not built (npm install with a C compiler)',
  }, async () => {
    const echo = await tcpEcho();
    cleanup.push(() => closeServer(echo));
    const { entry, agent } = await startPair(
      `    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(echo)} }]`,
      {
        agent: '    compression: zstd',
      },
    );
    const link = agent.rt.agent?.links[0];
    assert.equal(link?.session?.compression, true, 'zstd negotiated');
    const [h, p] = splitAddress(entry('forwards[0]'));
    const through = async (data: Buffer): Promise<Buffer> => {
      const s = connect(p, h);
      s.end(data);
      const parts: Buffer[] = [];
      for await (const c of s) parts.push(c as Buffer);
      return Buffer.concat(parts);
    };
    const json = Buffer.from(
      JSON.stringify(
        Array.from({ length: 20000 }, (_, i) => ({
          id: i,
          name: `user-${i}`,
          active: i % 3 === 0,
          tags: ['a', 'b'],
        })),
      ),
    );
    const back = await through(json);
    assert.equal(
      createHash('sha256').update(back).digest('hex'),
      createHash('sha256').update(json).digest('hex'),
    );
    assert.ok(link);
    // a second stream reuses the zstd contexts the first gave back (both sides): still intact
    const sentBefore = link.session?.compressOut ?? 0;
    const again = await through(json);
    assert.ok(again.equals(json), 'the second JSON stream is intact');
    const sent = (link.session?.compressOut ?? 0) - sentBefore;
    assert.ok(
      sent < json.length / 3,
      `the second stream was compressed too (${sent} of ${json.length} bytes)`,
    );
    const ratio = (link.stats() as { compression_ratio: number }).compression_ratio;
    assert.ok(ratio > 3, `compression ratio ${ratio}`);
    const offeredBefore = link?.session?.compressIn ?? 0;
    const random = randomBytes(4 << 20);
    assert.ok((await through(random)).equals(random));
    // the stream gave up after 8 payloads that did not compress: the rest went as they were
    const offered = (link?.session?.compressIn ?? 0) - offeredBefore;
    assert.ok(offered <= 8 * 16384, `${offered} bytes offered to zstd out of ${random.length}`);
  });

  test('agent entries count their connections as every listener does (zipline_downstream_connections_active and _total)', async () => {
    const { entry } = await startPair('    socks5: 127.0.0.1:0');
    const series = (name: string) => metricValue(name, 'listener="tunnel.agent.socks5"');
    const active = await series('zipline_downstream_connections_active');
    const total = await series('zipline_downstream_connections_total');
    const [h, p] = splitAddress(entry('socks5'));
    const clients = [connect(p, h), connect(p, h)];
    for (const c of clients) {
      c.on('error', () => {});
      await once(c, 'connect');
    }
    await until(
      async () => (await series('zipline_downstream_connections_active')) === active + 2,
      'two open connections counted',
    );
    assert.equal(await series('zipline_downstream_connections_total'), total + 2);
    for (const c of clients) c.destroy();
    await until(
      async () => (await series('zipline_downstream_connections_active')) === active,
      'both closed',
    );
  });

  test("a reload's idle_timeout applies to the SOCKS5 and HTTP-proxy entries' next connections", async () => {
    const echo = await tcpEcho();
    cleanup.push(() => closeServer(echo));
    const body = '    socks5: 127.0.0.1:0\n    http_proxy: 127.0.0.1:0';
    const { agent, relayAddr, entry } = await startPair(body); // idle_timeout: the default 10m
    const next = loadConfigText(agentYaml(relayAddr, `    idle_timeout: 300ms\n${body}`, 'tls: false'), {});
    assert.ok(next.ok);
    const report = await agent.rt.reload(next.config);
    assert.equal(report.result, 'applied', JSON.stringify(report));
    const dest = port(echo);
    const opened = async (kind: 'socks5' | 'http_proxy'): Promise<Socket> => {
      const [h, p] = splitAddress(entry(kind));
      const s = connect(p, h);
      s.on('error', () => {});
      await once(s, 'connect');
      const reply = async (n: number): Promise<Buffer> =>
        (await until(
          () => (s.readableLength >= n ? (s.read(n) as Buffer) : null),
          `${kind} reply`,
        )) as Buffer;
      if (kind === 'socks5') {
        s.write(Buffer.from([5, 1, 0]));
        assert.deepEqual([...(await reply(2))], [5, 0]);
        s.write(Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, dest >> 8, dest & 0xff]));
        assert.equal((await reply(10))[1], 0, 'SOCKS5 CONNECT succeeded');
      } else {
        s.write(`CONNECT 127.0.0.1:${dest} HTTP/1.1\r\nHost: 127.0.0.1:${dest}\r\n\r\n`);
        const ok = 'HTTP/1.1 200 Connection Established\r\n\r\n';
        assert.equal(String(await reply(ok.length)), ok);
      }
      return s;
    };
    for (const kind of ['socks5', 'http_proxy'] as const) {
      const s = await opened(kind);
      const started = Date.now();
      // nothing either way: the new idle_timeout (300ms), not the one the entry started with
      await until(
        () => s.closed || s.readableEnded,
        `${kind}: closed after the reloaded idle_timeout`,
        5_000,
      );
      assert.ok(Date.now() - started >= 250, `${kind}: not before it`);
      s.destroy();
    }
  });

  test('max_connections caps each agent entry (the next is closed and counted); a reload raises it for new connections', async () => {
    const body = '    max_connections: 2\n    socks5: 127.0.0.1:0';
    const { agent, relayAddr, entry } = await startPair(body);
    const refused = () =>
      metricValue(
        'zipline_downstream_rejected_total',
        'listener="tunnel.agent.socks5",code="ZL_LISTENER_OVER_LIMIT"',
      );
    const before = await refused();
    const [h, p] = splitAddress(entry('socks5'));
    const open = async (): Promise<Socket> => {
      const c = connect(p, h);
      c.on('error', () => {});
      cleanup.push(() => {
        c.destroy();
      });
      await once(c, 'connect');
      return c;
    };
    const held = [await open(), await open()];
    await until(() => agent.rt.agent?.activeCount() === 2 || null, 'two connections held');
    const third = await open();
    await until(() => third.closed || third.readableEnded, 'the third closed at once');
    await until(async () => (await refused()) === before + 1, 'and counted as over the limit');
    assert.ok(
      held.every((c) => !c.closed && !c.readableEnded),
      'the first two stay',
    );
    const next = loadConfigText(agentYaml(relayAddr, body.replace(': 2', ': 3'), 'tls: false'), {});
    assert.ok(next.ok);
    assert.equal((await agent.rt.reload(next.config)).result, 'applied');
    const fourth = await open();
    fourth.write(Buffer.from([5, 1, 0])); // a greeting: served, not closed
    await until(() => fourth.readableLength >= 2 || fourth.closed, 'the greeting answered');
    assert.ok(fourth.readableLength >= 2, 'served under the raised cap, not refused');
    assert.deepEqual([...(fourth.read(2) as Buffer)], [5, 0]);
    assert.equal(await refused(), before + 1);
  });

  test('HTTP-proxy entry: CONNECT with early data in the same write; the access line counts each byte once', async () => {
    const echo = await tcpEcho();
    cleanup.push(() => closeServer(echo));
    const { agent, entry } = await startPair('    http_proxy: 127.0.0.1:0');
    const [h, p] = splitAddress(entry('http_proxy'));
    const head = `CONNECT 127.0.0.1:${port(echo)} HTTP/1.1\r\nHost: 127.0.0.1:${port(echo)}\r\n\r\n`;
    const bytes = (d: string) =>
      metricValue('zipline_downstream_bytes_total', `listener="tunnel.agent.http_proxy",direction="${d}"`);
    const [rx, tx] = [await bytes('rx'), await bytes('tx')];
    const s = connect(p, h);
    s.end(`${head}early`); // the request and bytes for the destination in one write
    let out = '';
    for await (const c of s) out += String(c);
    assert.equal(out, 'HTTP/1.1 200 Connection Established\r\n\r\nearly');
    const line = await until(
      () => agent.access.find((l) => l.listener === 'tunnel.agent.http_proxy' && l.method === 'CONNECT'),
      'the access line',
    );
    assert.ok(line);
    assert.equal(line.bytes_in, head.length + 'early'.length);
    assert.equal(line.bytes_out, out.length);
    // and the listener's byte series, as every listener's
    assert.equal(await bytes('rx'), rx + head.length + 'early'.length);
    assert.equal(await bytes('tx'), tx + out.length);
  });

  test('HTTP-proxy entry, absolute-form: the origin gets origin-form and Connection: close, and keeps its framing even when Connection names it', async () => {
    const echo = await tcpEcho(); // the origin: it answers with exactly what it received
    cleanup.push(() => closeServer(echo));
    const { entry } = await startPair('    http_proxy: 127.0.0.1:0');
    const [h, p] = splitAddress(entry('http_proxy'));
    const to = `127.0.0.1:${port(echo)}`;
    const body = '5\r\nhello\r\n0\r\n\r\n';
    const s = connect(p, h);
    s.end(
      `POST http://${to}/p?q HTTP/1.1\r\nHost: ${to}\r\nConnection: transfer-encoding, x-drop\r\n` +
        `X-Drop: 1\r\nTransfer-Encoding: chunked\r\n\r\n${body}`,
    );
    let out = '';
    for await (const c of s) out += String(c);
    assert.equal(
      out,
      `POST /p?q HTTP/1.1\r\nHost: ${to}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${body}`,
    );
  });

  for (const native of ['auto', 'off'] as const) {
    test(`a relay at its max_streams: the next TCP stream fails at once with ZL_TUNNEL_LIMIT, a new UDP client's datagrams are dropped and counted (native: ${native})`, async () => {
      const echo = await tcpEcho();
      const uecho = await udpEcho();
      cleanup.push(() => closeServer(echo));
      cleanup.push(() => {
        uecho.close();
      });
      const { entry, agent, relay } = await startPair(
        `    native: ${native}\n    http_proxy: 127.0.0.1:0\n    forwards:\n      - { listen: 127.0.0.1:0, to: 127.0.0.1:${port(echo)} }\n      - { listen: 127.0.0.1:0, to: 127.0.0.1:${port(uecho)}, protocol: udp, receive_buffer: 1MiB }`,
        { relay: '    limits: { max_streams: 2 }' },
      );
      const [h, p] = splitAddress(entry('forwards[0]'));
      const held: Socket[] = [];
      for (let i = 0; i < 2; i++) {
        const s = connect(p, h);
        held.push(s);
        s.write('up');
        await once(s, 'data');
      }
      // the third: the relay answers RST REFUSED_STREAM. With one relay, the agent used to wait
      // connect_timeout (5 s here) for "another" and then report ZL_TUNNEL_NO_RELAY
      const third = connect(p, h);
      third.on('error', () => {}); // the agent resets it
      await new Promise((resolve) => third.once('close', resolve));
      const line = await until(
        () => agent.access.find((l) => l.error !== undefined && l.error !== null),
        'the refused stream logged',
      );
      assert.equal(line?.error, 'ZL_TUNNEL_LIMIT');
      assert.equal(line?.reply, 1);
      // the HTTP proxy entry: 503, the relay refusing for load
      const refused = await rawRequest(
        entry('http_proxy'),
        `CONNECT 127.0.0.1:${port(echo)} HTTP/1.1\r\nHost: x\r\n\r\n`,
        5000,
        (d) => d.includes('\r\n\r\n'),
      );
      assert.match(
        refused.data.toString(),
        /^HTTP\/1\.1 503 [^\r]*\r\n[\s\S]*X-Zipline-Error: ZL_TUNNEL_LIMIT\r\n/,
      );
      // UDP: a new client needs a stream too; its datagram is dropped, counted with the reason
      const label = 'listener="tunnel.agent.forwards[1]",code="ZL_TUNNEL_LIMIT"';
      const before = await seriesValue(`zipline_udp_dropped_total{${label}}`);
      const c = createSocket('udp4');
      cleanup.push(() => {
        c.close();
      });
      const [uh, up] = splitAddress(agent.rt.agent?.addresses()['udp[0]'] ?? '');
      if (have('ss')) {
        // receive_buffer: the kernel keeps twice what was asked, at most rmem_max
        const out = (await run('ss', ['-uamn', `sport = :${up}`])).stdout;
        const rmemMax = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
        assert.equal(Number(/skmem:\(r\d+,rb(\d+)/.exec(out)?.[1]), 2 * Math.min(1024 * 1024, rmemMax));
      }
      const refusedAtRelay = (): number => {
        const session = [...(relay.rt.relay?.sessions ?? [])][0];
        return (session?.stats() as { streams_refused?: number } | undefined)?.streams_refused ?? -1;
      };
      const refusedBefore = refusedAtRelay();
      const dropped = (): Promise<number> => seriesValue(`zipline_udp_dropped_total{${label}}`);
      c.send('refused', up, uh);
      await until(async () => (await dropped()) === before + 1, 'the dropped datagram counted');
      assert.equal(refusedAtRelay(), refusedBefore + 1);
      // the client keeps sending: its datagrams are dropped with the same code for a while, without
      // asking the relay again (it used to send an OPEN per round trip, each refused)
      for (let i = 2; i <= 20; i++) {
        c.send(`refused ${i}`, up, uh);
        await until(async () => (await dropped()) === before + i, `datagram ${i} dropped`);
      }
      assert.equal(refusedAtRelay(), refusedBefore + 1, 'one OPEN for the 20 datagrams');
      const stats = agent.rt.agent?.stats() as { udp_forwards: { dropped: number; sessions: number }[] };
      assert.ok((stats.udp_forwards[0]?.dropped ?? 0) >= 20);
      assert.equal(stats.udp_forwards[0]?.sessions, 0, 'a client held off is no association');
      // with a stream free again, the same client gets through once the hold-off (1 s) is over
      for (const s of held) s.destroy();
      await until(() => agent.rt.agent?.links[0]?.session?.streams.size === 0, 'the held streams gone');
      let got = '';
      c.on('message', (m) => {
        got = String(m);
      });
      await until(
        () => {
          c.send('again', up, uh);
          return got === 'again';
        },
        'the client through again',
        5000,
        50,
      );
    });
  }

  test('10,000 streams opened and closed leave no streams, sockets or descriptors behind', async () => {
    const echo = await tcpEcho();
    cleanup.push(() => closeServer(echo));
    const { entry, agent, relay } = await startPair(
      `    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(echo)} }]`,
    );
    const [h, p] = splitAddress(entry('forwards[0]'));
    const one = (): Promise<void> =>
      new Promise((resolve, reject) => {
        const s = connect(p, h);
        s.on('error', reject);
        s.end('x');
        s.on('data', () => {});
        s.on('close', () => resolve());
      });
    // warm up, then take the baseline
    for (let i = 0; i < 20; i++) await one();
    await until(() => (agent.rt.agent?.activeCount() ?? 1) === 0, 'warm-up done');
    const baseline = openFds();
    let done = 0;
    const worker = async (): Promise<void> => {
      while (done < 10_000) {
        done++;
        await one();
      }
    };
    await Promise.all(Array.from({ length: 50 }, worker));
    const session = agent.rt.agent?.links[0]?.session;
    await until(
      () =>
        agent.rt.agent?.activeCount() === 0 &&
        session?.streams.size === 0 &&
        relay.rt.relay?.activeCount() === 0 &&
        openFds() <= baseline,
      'streams, sockets and fds back to the baseline',
    );
    assert.ok((session?.streamsOpened ?? 0) >= 10_000);
  });
});

describe('egress through a proxy (via)', () => {
  test('HTTP CONNECT with basic auth, and SOCKS5 (a zipline socks5 listener), both reach the relay', async () => {
    const echo = await tcpEcho();
    cleanup.push(() => closeServer(echo));
    // a corporate-style proxy that insists on credentials
    const seen: string[] = [];
    const corp = await listen(
      createServer((c) => {
        c.once('data', (head: Buffer) => {
          const text = head.toString('latin1');
          seen.push(text.split('\r\n')[0] as string);
          const auth = /^Proxy-Authorization: Basic (\S+)/im.exec(text)?.[1];
          if (Buffer.from(auth ?? '', 'base64').toString() !== 'alice:s3cret') {
            c.end('HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n');
            return;
          }
          const [, host, p] = /^CONNECT (\S+):(\d+) /.exec(text) ?? [];
          const up = connect(Number(p), host as string, () =>
            c.write('HTTP/1.1 200 Connection established\r\n\r\n'),
          );
          c.pipe(up).pipe(c);
          c.on('error', () => up.destroy());
          up.on('error', () => c.destroy());
        });
      }),
    );
    cleanup.push(() => closeServer(corp));
    const socksProxy = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
drain_timeout: 1s
listeners:
  - { name: s5, protocol: socks5, listen: 127.0.0.1:0, allow: ["127.0.0.1:*"] }
`);
    cleanup.push(() => socksProxy.stop());
    for (const via of [`http://alice:s3cret@127.0.0.1:${port(corp)}`, `socks5://${socksProxy.addr('s5')}`]) {
      const { entry } = await startPair(
        `    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(echo)} }]`,
        {
          agent: `    via: "${via}"`,
        },
      );
      const [h, p] = splitAddress(entry('forwards[0]'));
      const s = connect(p, h);
      s.end('via');
      let out = '';
      for await (const c of s) out += String(c);
      assert.equal(out, 'via', via);
    }
    assert.match(seen[0] ?? '', /^CONNECT 127\.0\.0\.1:\d+ HTTP\/1\.1$/);
    // the session through the socks5 listener is still open (no access line yet): count it
    const s5 = socksProxy.rt.listeners.get('s5')?.stats() as { total: number; active: number };
    assert.ok(s5.total >= 1 && s5.active >= 1, 'the socks5 listener carries the session');
  });
});

test('the admin dashboard renders the tunnel: the agent relays and entries, and the relay sessions', async () => {
  const { relay, agent } = await startPair('    socks5: 127.0.0.1:0');
  const a = await renderDashboard(agent.rt.admin.url());
  assert.match(a, /<h2>Tunnel agent/);
  assert.match(a, new RegExp(`<code>${relay.rt.relay?.address()}</code></td><td class="up">up`));
  // the agent's entries with their addresses and connection counts
  const socks = agent.rt.agent?.addresses().socks5;
  assert.match(a, new RegExp(`<td>socks5</td><td><code>${socks}</code></td><td>0</td><td>0</td>`));
  const r = await renderDashboard(relay.rt.admin.url());
  assert.match(r, /<h2>Tunnel relay/);
  assert.match(r, /<td>agent-under-test<\/td>/);
  // which engine runs the session, on both sides
  const which = engine.available ? 'native' : 'js';
  assert.match(a, new RegExp(`<td>${which}</td></tr>`));
  assert.match(r, new RegExp(`<td>${which}</td></tr>`));
});

test('relay clients: a refused address gets no TLS handshake and is not a failed login; others handshake', async () => {
  const relay = await startRuntime(relayYaml('    clients: { deny: [127.0.0.1] }', 'auto'));
  cleanup.push(() => relay.stop());
  const [h, p] = splitAddress(relay.rt.relay?.address() ?? '');
  const { connect: connectTls } = await import('node:tls');
  const handshake = (from: string): Promise<boolean> =>
    new Promise((resolve) => {
      const raw = connect({ host: h, port: p, localAddress: from });
      raw.on('error', () => resolve(false));
      const s = connectTls({ socket: raw, rejectUnauthorized: false });
      s.on('secureConnect', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
      s.on('close', () => resolve(false));
    });
  assert.equal(await handshake('127.0.0.2'), true);
  assert.equal(await handshake('127.0.0.1'), false);
  assert.equal(
    await metricValue('zipline_downstream_rejected_total', 'listener="tunnel.relay",code="ZL_CLIENT_DENIED"'),
    1,
  );
  assert.equal(relay.rt.relay?.authFailures, 0);
});

/**
 * A relay of the test's own, frames in and out by hand: `onFrame` sees each frame the agent sends
 * (the HELLO first) with the connection to answer on. An agent runtime (engine `native`) is
 * started against it, with `body` (its entries).
 */
async function agentAgainst(
  native: string,
  body: string,
  onFrame: (type: number, id: number, payload: Buffer, sock: Socket) => void,
) {
  const server = createServer((sock) => {
    sock.on('error', () => {});
    const dec = new FrameDecoder(
      (type, _f, id, payload) => onFrame(type, id, Buffer.from(payload), sock),
      65536,
    );
    sock.on('data', (c: Buffer) => dec.feed(c));
  });
  await listen(server);
  cleanup.push(() => closeServer(server));
  const agent = await startRuntime(
    agentYaml(`127.0.0.1:${port(server)}`, `    native: ${native}\n${body}`, 'tls: false'),
  );
  cleanup.push(() => agent.stop());
  return agent;
}

const HELLO_ACK = helloAckFrame();

/**
 * An agent with one TCP forward against a relay of the test's own that answers HELLO (`onFrame`
 * sees every later frame), once its session is up; `client()` connects to the forward.
 */
async function forwardAgainst(
  native: string,
  onFrame: (type: number, id: number, payload: Buffer, sock: Socket) => void,
) {
  const agent = await agentAgainst(
    native,
    '    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:9 }]',
    (type, id, payload, sock) => {
      if (type === FRAME.HELLO) sock.write(HELLO_ACK);
      else onFrame(type, id, payload, sock);
    },
  );
  await until(() => agent.rt.agent?.links[0]?.state === 'up', 'agent session up');
  const [h, p] = splitAddress(agent.rt.agent?.addresses()['forwards[0]'] ?? '');
  const client = (): Socket => connect(p, h).on('error', () => {});
  return { agent, client };
}

for (const native of engine.available ? ['auto', 'off'] : ['off']) {
  test(`an agent refuses a stream its relay opens toward it: OPEN_ACK 2 at once (agent native: ${native})`, async () => {
    let answered: (status: number) => void = () => {};
    const answer = new Promise<number>((r) => {
      answered = r;
    });
    await agentAgainst(native, '', (type, id, payload, sock) => {
      // HELLO_ACK, then an OPEN of the relay's own (an even id) toward the agent
      if (type === FRAME.HELLO)
        sock.write(
          Buffer.concat([HELLO_ACK, encodeFrame(FRAME.OPEN, 0, 2, Buffer.from([1, 1, 127, 0, 0, 1, 0, 80]))]),
        );
      if (type === FRAME.OPEN_ACK && id === 2) answered(payload[0] as number);
    });
    // left unanswered, the relay would wait for its own open timeout
    assert.equal(await answer, OPEN_STATUS.NOT_ALLOWED);
  });

  test(`a forward's client that resets while its stream is opening is seen gone: 499 when the relay answers, the stream reset (agent native: ${native})`, async () => {
    let ack: (() => void) | null = null;
    const resets: number[] = [];
    const { agent, client: forwardClient } = await forwardAgainst(native, (type, id, _payload, sock) => {
      // the OPEN is answered only when the test says so
      if (type === FRAME.OPEN)
        ack = () => sock.write(encodeFrame(FRAME.OPEN_ACK, 0, id, Buffer.from([OPEN_STATUS.OK])));
      if (type === FRAME.RST) resets.push(id);
    });
    const client = forwardClient();
    await once(client, 'connect');
    client.write('early');
    await until(() => ack !== null, 'the OPEN at the relay');
    client.resetAndDestroy();
    // `pause()` leaves Node reading up to the socket's high-water mark, so the RST is read now;
    // a handle that stopped reading would only find out once the pipe began
    await until(
      () => agent.rt.agent?.activeCount() === 0,
      "the client's reset seen while the stream opens",
      5000,
    );
    (ack as unknown as () => void)();
    const line = await until(
      () => agent.access.find((l) => l.listener === 'tunnel.agent.forwards[0]'),
      'access line',
      5000,
    );
    assert.equal(line?.status, 499);
    assert.equal(line?.error, 'ZL_CLIENT_ABORTED');
    await until(() => resets.length === 1, 'the stream reset toward the relay', 5000);
  });

  test(`a stream whose session ends in the read that accepted it: the client is closed at once, not left to idle_timeout (agent native: ${native})`, async () => {
    const { agent, client: forwardClient } = await forwardAgainst(native, (type, id, _payload, sock) => {
      // OPEN_ACK 0 and, in the same write, a frame that ends the session (WINDOW_UPDATE of 0)
      if (type === FRAME.OPEN)
        sock.write(
          Buffer.concat([
            encodeFrame(FRAME.OPEN_ACK, 0, id, Buffer.from([OPEN_STATUS.OK])),
            encodeFrame(FRAME.WINDOW_UPDATE, 0, 0, Buffer.alloc(4)),
          ]),
        );
    });
    const client = forwardClient();
    const gone = new Promise<void>((r) => client.once('close', () => r()));
    client.resume();
    client.write('hello');
    // (without the fix the connection waited for idle_timeout: 10 minutes)
    const line = await until(
      () => agent.access.find((l) => l.listener === 'tunnel.agent.forwards[0]'),
      'access line',
      5000,
    );
    await gone;
    assert.equal(line?.error, 'ZL_TUNNEL_CLOSED');
  });
}

for (const native of engine.available ? ['auto', 'off'] : ['off']) {
  test(`a UDP forward whose stream is reset in the read that accepted it does not send into it: the client's next datagrams open a new one (agent native: ${native})`, async () => {
    let opens = 0;
    const agent = await agentAgainst(
      native,
      '    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:9, protocol: udp }]',
      (type, id, _payload, sock) => {
        if (type === FRAME.HELLO) sock.write(HELLO_ACK);
        // OPEN_ACK 0 and, in the same write, RST for the same stream
        if (type === FRAME.OPEN) {
          opens++;
          const cancel = Buffer.alloc(4);
          cancel.writeUInt32BE(ERROR.CANCEL);
          sock.write(
            Buffer.concat([
              encodeFrame(FRAME.OPEN_ACK, 0, id, Buffer.from([OPEN_STATUS.OK])),
              encodeFrame(FRAME.RST, 0, id, cancel),
            ]),
          );
        }
      },
    );
    await until(() => agent.rt.agent?.links[0]?.state === 'up', 'agent session up');
    const client = forwardClient(agent);
    // a client that keeps asking (a resolver retrying): each datagram would keep a dead
    // association alive for ever
    const asking = setInterval(() => client.send('query'), 100);
    try {
      await until(() => opens >= 2, 'a second association opened');
    } finally {
      clearInterval(asking);
    }
  });
}

/** A forward through a relay and an agent on the given engines to a destination run by `serve`. */
async function forwardTo(serve: (s: Socket) => void, relayNative: string, agentNative: string) {
  const origin = createServer((s) => {
    s.on('error', () => {});
    serve(s);
  });
  await listen(origin);
  cleanup.push(() => closeServer(origin));
  const pair = await startPair(`    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(origin)} }]`, {
    relay: `    native: ${relayNative}`,
    agent: `    native: ${agentNative}`,
  });
  const [host, p] = splitAddress(pair.entry('forwards[0]'));
  return { ...pair, dial: (): Socket => connect(p, host) };
}

for (const [relayNative, agentNative] of engine.available
  ? [
      ['off', 'auto'],
      ['off', 'off'],
      ['auto', 'off'],
    ]
  : [['off', 'off']]) {
  test(`a reply and its FIN in one read arrive whole, every time (relay native: ${relayNative}, agent native: ${agentNative})`, async () => {
    // a destination that answers and closes at once: the reply and its FIN reach the relay together
    const { agent, dial } = await forwardTo(
      (s) => s.once('data', () => s.end('reply')),
      relayNative as string,
      agentNative as string,
    );
    for (let i = 0; i < 50; i++) {
      const s = dial();
      s.on('error', () => {});
      s.end('ask');
      let out = '';
      for await (const c of s) out += String(c);
      assert.equal(out, 'reply', `round trip ${i}`);
    }
    await until(() => agent.access.length === 50, '50 access lines');
    assert.deepEqual([...new Set(agent.access.map((l) => l.error))], [null]);
  });

  test(`a destination that resets right after its reply resets the forward's client, never a FIN (relay native: ${relayNative}, agent native: ${agentNative})`, {
    skip: RESETS_TOLD ? false : 'telling an RST from a FIN needs the native addon',
  }, async () => {
    // libuv reports an RST that comes with the last bytes as a plain end, as it does a FIN
    const { relay, dial } = await forwardTo(
      (s) =>
        s.once('data', () => {
          s.write('reply');
          s.resetAndDestroy();
        }),
      relayNative as string,
      agentNative as string,
    );
    for (let i = 0; i < 5; i++) {
      const s = dial();
      const end = endOf(s);
      s.write('ask');
      assert.equal((await end).kind, 'reset', `connection ${i}`);
    }
    await until(() => relay.access.length === 5, '5 access lines at the relay');
  });
}
