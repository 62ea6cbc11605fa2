/**
 * Reconnect: an agent whose relays fail in every way a relay can (nothing listening, a close on
 * accept, silence through the TLS handshake, garbage instead of TLS, garbage frames instead of
 * HELLO_ACK, a wrong token, a GOAWAY asking for 21 days, a HELLO_ACK with a fatal frame behind it) keeps trying each with backoff (the
 * GOAWAY's retry-after honoured up to reconnect.max), and every failed attempt frees what
 * it made: once the agent stops, the descriptors are back to what they were before it started
 * (the hostile relays never close their side), no link waits to try again, and the attempts were
 * counted per relay.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { ERROR, FRAME } from '../../src/tunnel/constants.js';
import { encodeFrame, goawayPayload } from '../../src/tunnel/frame.js';
import { seriesValue } from '../helpers/metrics.js';
import { openFds, refusedPort, until } from '../helpers/net.js';
import { tempDir } from '../helpers/temp.js';
import { helloAckFrame } from '../helpers/tunnel.js';
import { startRuntime } from '../helpers/zipline.js';

const TOKEN = 'test-token-0123456789abcdef';
const PIN = `sha256:${'00'.repeat(32)}`;
const cleanup: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

/**
 * Hostile relays in a child process (so this process's descriptors are the agent's alone): each
 * keeps its side of every connection open for ever (allowHalfOpen, never ended), so an attempt
 * that does not close its own socket leaks it. Kinds: `closes` (destroyed on accept), `silent`
 * (nothing, ever), `garbage` (an HTTP answer instead of TLS), `bad_frames` (plain TCP: takes the
 * HELLO and answers a frame with a wrong CRC), `goaway_forever` (plain TCP: answers the HELLO with
 * a GOAWAY whose retry-after is ~21 days: under setTimeout's 2^31 ms, beyond which Node would fire
 * the timer at once), `ack_then_fatal` (plain TCP: a HELLO_ACK and a session-ending frame in one
 * write).
 */
const GOAWAY_FOREVER = encodeFrame(
  FRAME.GOAWAY,
  0,
  0,
  goawayPayload(0, ERROR.SHUTTING_DOWN, 0x7000_0000, 'come back in 21 days'),
).toString('hex');
/** A HELLO_ACK and, in the same write, a frame that ends the session (WINDOW_UPDATE of 0). */
const ACK_THEN_FATAL = Buffer.concat([
  helloAckFrame(),
  encodeFrame(FRAME.WINDOW_UPDATE, 0, 0, Buffer.alloc(4)),
]).toString('hex');
const HOSTILE = `
import { createServer } from 'node:net';
const kinds = {
  closes: (s) => s.destroy(),
  silent: () => {},
  garbage: (s) => s.write('HTTP/1.1 400 Bad Request\\r\\n\\r\\n'),
  bad_frames: (s) => s.once('data', () => s.write(Buffer.from('4d53000000040300000000000000000000000000', 'hex'))),
  goaway_forever: (s) => s.once('data', () => s.write(Buffer.from('${GOAWAY_FOREVER}', 'hex'))),
  ack_then_fatal: (s) => s.once('data', () => s.write(Buffer.from('${ACK_THEN_FATAL}', 'hex'))),
};
const ports = {};
const held = [];
for (const [kind, onConn] of Object.entries(kinds)) {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    held.push(s);
    s.on('error', () => {});
    s.resume();
    onConn(s);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  ports[kind] = server.address().port;
}
process.stdout.write(JSON.stringify(ports) + '\\n');
`;

async function hostileRelays(): Promise<Record<string, number>> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', HOSTILE], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  cleanup.push(() => {
    child.kill('SIGKILL');
  });
  const [line] = (await once(createInterface({ input: child.stdout as Readable }), 'line')) as [string];
  return JSON.parse(line) as Record<string, number>;
}

/**
 * Attempts that ended: failed ones, and (for `ack_then_fatal` on the native engine, whose events
 * come one callback each) sessions that were up before their fatal frame was handled.
 */
const endedAttempts = async (relay: string): Promise<number> =>
  (await seriesValue(`zipline_tunnel_reconnects_total{relay="${relay}",result="failed"}`)) +
  (await seriesValue(`zipline_tunnel_reconnects_total{relay="${relay}",result="up"}`));

test('every failed attempt to reach a relay frees what it made, whatever the failure', async () => {
  // connection refused (below the ephemeral range: a port just freed there could be the next
  // listen(0)'s, the hostile relays' below among them)
  const refused = `127.0.0.1:${await refusedPort()}`;
  const hostile = await hostileRelays();
  const at = (kind: string): string => `127.0.0.1:${hostile[kind]}`;
  const relay = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
drain_timeout: 1s
tunnel:
  relay:
    listen: 127.0.0.1:0
    tls: off
    state_dir: ${tempDir('zl-relay-')}
    tokens: ["another-token-0123456789abcdef"]
`);
  cleanup.push(() => relay.stop());
  const wrongToken = relay.rt.relay?.address() ?? '';
  const kinds: Record<string, { address: string; tls: boolean; min: number }> = {
    refused: { address: refused, tls: true, min: 20 },
    closes: { address: at('closes'), tls: true, min: 20 },
    silent: { address: at('silent'), tls: true, min: 5 },
    garbage: { address: at('garbage'), tls: true, min: 20 },
    bad_frames: { address: at('bad_frames'), tls: false, min: 20 },
    // a retry-after is honoured up to reconnect.max (40 ms here), not for 21 days
    goaway_forever: { address: at('goaway_forever'), tls: false, min: 20 },
    // the session ends in the read that brought its HELLO_ACK: a failed attempt, not 'up' for ever
    ack_then_fatal: { address: at('ack_then_fatal'), tls: false, min: 20 },
    // AUTH_FAILED waits at least 10 s before the next attempt
    wrong_token: { address: wrongToken, tls: false, min: 1 },
  };
  const relays = Object.values(kinds)
    .map((k) => `      - { address: "${k.address}", ${k.tls ? `fingerprint: "${PIN}"` : 'tls: false'} }`)
    .join('\n');
  const baseline = openFds();
  const agent = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
drain_timeout: 1s
tunnel:
  agent:
    id: reconnect-under-test
    relays:
${relays}
    token: "${TOKEN}"
    via: ""
    connect_timeout: 250ms
    reconnect: { base: 10ms, max: 40ms }
`);
  let stopped = false;
  cleanup.push(() => (stopped ? undefined : agent.stop()));
  const links = agent.rt.agent?.links ?? [];
  assert.equal(links.length, 8);
  for (const [kind, k] of Object.entries(kinds)) {
    await until(async () => (await endedAttempts(k.address)) >= k.min, `${kind}: ${k.min} attempts`, 15_000);
  }
  const errorOf = (kind: string): string =>
    links.find((l) => l.address === kinds[kind]?.address)?.lastError ?? '';
  assert.match(errorOf('refused'), /ECONNREFUSED/);
  assert.match(errorOf('silent'), /ZL_TUNNEL_(TLS|HANDSHAKE|CONNECT)|timed? ?out|within/i);
  assert.match(errorOf('wrong_token'), /ZL_TUNNEL_AUTH_FAILED/);
  assert.ok(links.every((l) => l.state !== 'up' && l.session === null));

  await agent.stop();
  stopped = true;
  await until(() => openFds() <= baseline, 'the descriptors back to the baseline');
  // and no link is left waiting to try again
  assert.deepEqual(
    links.map((l) => l.stats().state),
    links.map(() => 'stopped'),
  );
});
