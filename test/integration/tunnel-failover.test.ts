/**
 * Liveness and failover with real processes: an agent with two relays. Freezing the relay that
 * new streams go to (SIGSTOP) gets it declared dead within `interval × misses` (+ one interval,
 * the PING tick), new streams go to the other relay at once, and when the frozen one resumes
 * (SIGCONT) the agent reconnects to it with backoff.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { after, test } from 'node:test';
import { closeServer, port, splitAddress, tcpEcho, until } from '../helpers/net.js';
import { tempDir } from '../helpers/temp.js';
import { spawnZipline, type ZiplineProcess } from '../helpers/zipline.js';

const TOKEN = randomBytes(24).toString('hex');
const env = { ZIPLINE_TUNNEL_TOKEN: TOKEN };
const procs: ZiplineProcess[] = [];
after(async () => {
  for (const p of procs) {
    p.proc.kill('SIGCONT');
    await p.stop();
  }
});

interface RelayView {
  address: string;
  state: string;
  sessions_opened: number;
}

async function agentView(
  z: ZiplineProcess,
): Promise<{ preferred: string | null; relays: RelayView[]; entries: Record<string, { address: string }> }> {
  const s = (await z.stats()) as unknown as {
    tunnel: {
      agent: { preferred: string | null; relays: RelayView[]; entries: Record<string, { address: string }> };
    };
  };
  return s.tunnel.agent;
}

async function startRelay(): Promise<{ z: ZiplineProcess; address: string; fingerprint: string }> {
  const z = await spawnZipline(
    `
admin: { listen: 127.0.0.1:0 }
log: { level: info, access: stdout }
drain_timeout: 1s
tunnel:
  relay:
    listen: 127.0.0.1:0
    state_dir: ${tempDir('zl-relay-')}
    tokens: ["\${ZIPLINE_TUNNEL_TOKEN}"]
    allow: ["127.0.0.1:*"]
    heartbeat: { interval: 500ms, misses: 3 }
`,
    env,
  );
  procs.push(z);
  const s = (await z.stats()) as unknown as {
    tunnel: { relay: { address: string; tls: { fingerprint: string } } };
  };
  return { z, address: s.tunnel.relay.address, fingerprint: s.tunnel.relay.tls.fingerprint };
}

test('a frozen relay is declared dead within interval × misses (+1 interval); new streams fail over; it is taken back when it resumes', async (t) => {
  const echo = await tcpEcho();
  const relays = [await startRelay(), await startRelay()];
  const agent = await spawnZipline(
    `
admin: { listen: 127.0.0.1:0 }
log: { level: info, access: stdout }
drain_timeout: 1s
tunnel:
  agent:
    relays:
${relays.map((r) => `      - { address: "${r.address}", fingerprint: "${r.fingerprint}" }`).join('\n')}
    token: "\${ZIPLINE_TUNNEL_TOKEN}"
    connect_timeout: 2s
    heartbeat: { interval: 500ms, misses: 3 }
    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(echo)} }]
`,
    env,
  );
  procs.push(agent);
  try {
    await until(
      async () => (await agentView(agent)).relays.every((r) => r.state === 'up'),
      'both relay sessions up',
    );
    const [fh, fp] = splitAddress((await agentView(agent)).entries['forwards[0]']?.address ?? '');
    const roundTrip = async (): Promise<string> => {
      const s = connect(fp, fh);
      s.end('ping');
      let out = '';
      for await (const c of s) out += String(c);
      return out;
    };
    assert.equal(await roundTrip(), 'ping');
    const preferred = await until(async () => (await agentView(agent)).preferred, 'a preferred relay');
    const frozen = relays.find((r) => r.address === preferred);
    const other = relays.find((r) => r.address !== preferred);
    assert.ok(frozen && other);

    frozen.z.proc.kill('SIGSTOP');
    const t0 = Date.now();
    await until(
      async () => (await agentView(agent)).relays.find((r) => r.address === frozen.address)?.state !== 'up',
      'the frozen relay declared dead',
      10_000,
      25,
    );
    const detectedMs = Date.now() - t0;
    // the contract: within 3 × 500 ms, plus one interval (polling /stats included)
    t.diagnostic(`declared dead after ${detectedMs} ms`);
    assert.ok(detectedMs <= 2000, `declared dead after ${detectedMs} ms`);
    assert.ok(detectedMs >= 1000, `not before it could be (${detectedMs} ms)`);

    // new streams go to the other relay
    for (let i = 0; i < 5; i++) assert.equal(await roundTrip(), 'ping');
    await other.z.waitForLog(/"listener":"tunnel.relay".*"status":200/);
    assert.equal((await agentView(agent)).preferred, other.address);

    // resumed: the agent reconnects (with backoff) and the relay is usable again
    frozen.z.proc.kill('SIGCONT');
    await until(
      async () => {
        const r = (await agentView(agent)).relays.find((x) => x.address === frozen.address);
        return r?.state === 'up' && r.sessions_opened >= 2;
      },
      'the resumed relay back up',
      40_000,
      50,
    );
    assert.equal(await roundTrip(), 'ping');
  } finally {
    await closeServer(echo);
  }
});
