/**
 * The tunnel at reload, in one process (real loopback sockets). The relay: new TLS settings for
 * new sessions and a new `listen` bound beside the old one, while a session accepted before goes
 * on; a certificate or address it cannot use leaves it as it was. The agent's relay list: a relay
 * added is connected to, one removed gets no new streams while its open ones run to their end
 * (then its session closes and its gauges go), an unchanged entry keeps its session, and a new
 * entry whose CA file cannot be read leaves the list as it was. Its entries, as listeners: a TCP
 * forward's new `to` applies to its next connections, an added SOCKS5 entry is bound, a removed
 * forward stops accepting while its open connection runs on; a UDP forward's new `to` is for new
 * associations, and a removed one closes after its last.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { after, test } from 'node:test';
import { loadConfigText } from '../../src/config/load.js';
import type { ValidConfig } from '../../src/config/schema.js';
import { registry } from '../../src/metrics/catalog.js';
import { renderDashboard } from '../helpers/dashboard.js';
import { seriesValue } from '../helpers/metrics.js';
import {
  closeServer,
  dial,
  port,
  splitAddress,
  tcpEcho,
  tcpServer,
  udpClient,
  udpEcho,
  until,
} from '../helpers/net.js';
import { tempDir } from '../helpers/temp.js';
import { relayYaml, TUNNEL_TOKEN } from '../helpers/tunnel.js';
import { startRuntime } from '../helpers/zipline.js';

const TOKEN = TUNNEL_TOKEN;
const cleanup: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

async function startRelay(tls = 'off') {
  const relay = await startRuntime(relayYaml('', tls));
  cleanup.push(() => relay.stop());
  return relay;
}

function agentConfig(
  relays: string[],
  echoPort: number,
  entries = `    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${echoPort} }]`,
  id = 'agent-under-test',
): { text: string; config: ValidConfig } {
  const text = `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 1s
tunnel:
  agent:
    id: ${id}
    relays: [${relays.join(', ')}]
    token: "${TOKEN}"
    connect_timeout: 5s
    reconnect: { base: 20ms, max: 100ms }
${entries}
`;
  const loaded = loadConfigText(text, {});
  assert.ok(loaded.ok);
  return { text, config: loaded.config };
}

/** Writes `text` and reads its echo back through the agent's forward. */
async function roundTrip(s: Socket, text: string): Promise<void> {
  s.write(text);
  let got = '';
  while (got.length < text.length) got += String((await once(s, 'data'))[0]);
  assert.equal(got, text);
}

async function relayUpSeries(): Promise<string[]> {
  return (await registry.metrics()).split('\n').filter((l) => l.startsWith('zipline_tunnel_relay_up{'));
}

test("a reload's relay list: added relays are used, removed ones keep their open streams to the end, unchanged ones keep their session", async () => {
  const echo = await tcpEcho();
  cleanup.push(() => closeServer(echo));
  const [a, b] = [await startRelay(), await startRelay()];
  const [addrA, addrB] = [a.rt.relay?.address() ?? '', b.rt.relay?.address() ?? ''];
  const ref = (addr: string, extra = ''): string => `{ address: "${addr}", tls: false${extra} }`;
  const first = agentConfig([ref(addrA)], port(echo));
  const agent = await startRuntime(first.text);
  cleanup.push(() => agent.stop());
  const tunnel = agent.rt.agent;
  assert.ok(tunnel);
  const linkA = tunnel.links[0];
  await until(() => linkA?.state === 'up', 'a session with relay A');
  const forward = tunnel.addresses()['forwards[0]'] ?? '';
  const held = await dial(forward);
  cleanup.push(() => {
    held.destroy();
  });
  await roundTrip(held, 'through A');
  assert.equal(linkA?.session?.streams.size, 1);

  // the same list again: nothing changes
  const same = await agent.rt.reload(first.config);
  assert.deepEqual([same.result, same.listeners.changed], ['applied', []]);
  assert.equal(tunnel.links[0], linkA, 'the link (and its session) stays');

  // A leaves, B joins
  const second = agentConfig([ref(addrB)], port(echo));
  const moved = await agent.rt.reload(second.config);
  assert.equal(moved.result, 'applied', moved.errors.join('; '));
  assert.deepEqual(moved.listeners.changed, ['tunnel.agent']);
  assert.deepEqual(
    tunnel.links.map((l) => l.address),
    [addrB],
  );
  await until(() => tunnel.links[0]?.state === 'up', 'a session with relay B');
  const fresh = await dial(forward);
  cleanup.push(() => {
    fresh.destroy();
  });
  await roundTrip(fresh, 'through B');
  assert.equal(tunnel.links[0]?.session?.streams.size, 1, 'the new connection went to B');
  // the connection opened through A goes on, and A is listed until it ends
  await roundTrip(held, 'still through A');
  const retired = (): { address: string; streams: number }[] =>
    (tunnel.stats() as { retired_relays: { address: string; streams: number }[] }).retired_relays;
  assert.deepEqual(
    retired().map((r) => [r.address, r.streams]),
    [[addrA, 1]],
  );
  const page = await renderDashboard(agent.rt.admin.url());
  assert.match(
    page,
    new RegExp(`<code>${addrA}</code></td><td class="">retiring</td>`),
    'the dashboard shows A retiring',
  );
  assert.match(page, new RegExp(`<code>${addrB}</code></td><td class="up">up</td>`));
  assert.equal(linkA?.state, 'stopped', 'no reconnects to A');
  // A drains meanwhile (GOAWAY SHUTTING_DOWN): the retired link must not take that for a relay
  // to come back to once the session closes
  const drained = a.rt.drain();
  await until(() => linkA?.session?.goneAway === true, "A's GOAWAY reached the agent");
  held.end();
  await until(() => retired().length === 0, "A's session closed after its last stream");
  await drained;
  assert.equal(linkA?.session, null);
  assert.equal(linkA?.state, 'stopped', 'not reconnecting to A');
  const series = await relayUpSeries();
  assert.ok(!series.some((l) => l.includes(addrA)), `A's gauge went: ${series.join(' ')}`);
  assert.ok(
    series.some((l) => l.includes(addrB) && l.endsWith(' 1')),
    `B up: ${series.join(' ')}`,
  );

  // a new entry whose CA file cannot be read: refused, the list stays as it was
  const linkB = tunnel.links[0];
  const missing = `${tempDir('zl-agent-ca-')}/none.pem`;
  const broken = agentConfig(
    [ref(addrB), `{ address: "${addrA}", ca: "${missing}", server_name: relay.test }`],
    port(echo),
  );
  const refused = await agent.rt.reload(broken.config);
  assert.equal(refused.result, 'partial');
  assert.match(
    refused.errors.join('\n'),
    /cannot read the CA file .*none\.pem.*; the previous relay list stays/,
  );
  assert.deepEqual(tunnel.links, [linkB]);
  await roundTrip(fresh, 'B still serves');
});

/** Reads exactly `n` bytes. */
async function take(s: Socket, n: number): Promise<Buffer> {
  let got = Buffer.alloc(0);
  while (got.length < n) {
    const chunk = s.read(n - got.length) as Buffer | null;
    if (chunk !== null) got = Buffer.concat([got, chunk]);
    else await once(s, 'readable');
  }
  return got;
}

test("a reload's entries: a forward's new `to`, an added SOCKS5 entry, a removed forward whose open connection runs on", async () => {
  const one = await tcpEcho();
  const two = await tcpServer((s) => {
    s.write('two:');
    s.pipe(s);
  });
  cleanup.push(() => closeServer(one));
  cleanup.push(() => closeServer(two));
  const relay = await startRelay();
  const ref = `{ address: "${relay.rt.relay?.address()}", tls: false }`;
  const forward = (to: number): string => `{ listen: 127.0.0.1:0, to: 127.0.0.1:${to} }`;
  const start = agentConfig([ref], 0, `    forwards: [${forward(port(one))}]`);
  const agent = await startRuntime(start.text);
  cleanup.push(() => agent.stop());
  const tunnel = agent.rt.agent;
  assert.ok(tunnel);
  await until(() => tunnel.links[0]?.state === 'up', 'a session with the relay');
  const fwd = tunnel.addresses()['forwards[0]'] ?? '';
  const held = await dial(fwd);
  cleanup.push(() => {
    held.destroy();
  });
  await roundTrip(held, 'to one');

  // the forward's destination changes and a SOCKS5 entry is added
  const next = agentConfig([ref], 0, `    forwards: [${forward(port(two))}]\n    socks5: 127.0.0.1:0`);
  const applied = await agent.rt.reload(next.config);
  assert.equal(applied.result, 'applied', applied.errors.join('; '));
  assert.deepEqual(applied.listeners.changed, ['tunnel.agent.forwards[0]']);
  assert.deepEqual(applied.listeners.added, ['tunnel.agent.socks5']);
  assert.equal(tunnel.addresses()['forwards[0]'], fwd, 'the forward keeps its socket');
  const toTwo = await dial(fwd);
  cleanup.push(() => {
    toTwo.destroy();
  });
  assert.equal(String(await take(toTwo, 4)), 'two:', "the forward's next connection goes to the new `to`");
  await roundTrip(held, 'still to one');
  toTwo.destroy();
  const socks = await dial(tunnel.addresses().socks5 ?? '');
  cleanup.push(() => {
    socks.destroy();
  });
  socks.write(Buffer.from([5, 1, 0]));
  assert.deepEqual([...(await take(socks, 2))], [5, 0]);
  const p = port(one);
  socks.write(Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, p >> 8, p & 0xff]));
  assert.equal((await take(socks, 10))[1], 0, 'CONNECT through the added SOCKS5 entry succeeded');
  await roundTrip(socks, 'through socks5');
  socks.destroy();

  // the forward is removed: its port stops accepting, its open connection runs on and counts
  const gone = agentConfig([ref], 0, '    forwards: []\n    socks5: 127.0.0.1:0');
  const removed = await agent.rt.reload(gone.config);
  assert.equal(removed.result, 'applied', removed.errors.join('; '));
  assert.deepEqual(removed.listeners.removed, ['tunnel.agent.forwards[0]']);
  assert.equal(tunnel.addresses()['forwards[0]'], undefined);
  await assert.rejects(dial(fwd), /ECONNREFUSED/);
  await roundTrip(held, 'one is still there');
  const retired = (): unknown[] => (tunnel.stats() as { retired_entries: unknown[] }).retired_entries;
  assert.deepEqual(retired(), [{ name: 'tunnel.agent.forwards[0]', active: 1 }]);
  assert.match(
    await renderDashboard(agent.rt.admin.url()),
    /<td>tunnel\.agent\.forwards\[0\] <small>\(retiring\)<\/small><\/td><td><\/td><td>1<\/td>/,
  );
  assert.equal(tunnel.activeCount(), 1, 'it counts for a drain');
  held.end();
  await until(() => tunnel.activeCount() === 0, 'the open connection ended');
  assert.deepEqual(retired(), []);
});

test("a reload's UDP forwards: a new `to` for new associations only; a removed one keeps its open associations, refuses new ones, and closes after the last", async () => {
  const one = await udpEcho();
  const two = createSocket('udp4');
  two.on('message', (m, r) => two.send(Buffer.concat([Buffer.from('two:'), m]), r.port, r.address));
  await new Promise<void>((resolve) => two.bind(0, '127.0.0.1', () => resolve()));
  cleanup.push(() => {
    one.close();
    two.close();
  });
  const relay = await startRelay();
  const ref = `{ address: "${relay.rt.relay?.address()}", tls: false }`;
  const forward = (to: UdpSocket): string =>
    `    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(to)}, protocol: udp }]`;
  const agent = await startRuntime(agentConfig([ref], 0, forward(one)).text);
  cleanup.push(() => agent.stop());
  const tunnel = agent.rt.agent;
  assert.ok(tunnel);
  await until(() => tunnel.links[0]?.state === 'up', 'a session with the relay');
  const address = tunnel.addresses()['udp[0]'] ?? '';
  const [host, udpPort] = splitAddress(address);
  const clients: UdpSocket[] = [];
  /** A datagram from `c` through the forward, and the answer it gets. */
  const ask = async (c: UdpSocket, text: string): Promise<string> => {
    const answer = once(c, 'message');
    c.send(text, udpPort, host);
    return String((await answer)[0]);
  };
  const client = async (): Promise<UdpSocket> => {
    const c = await udpClient();
    clients.push(c);
    cleanup.push(() => {
      c.close();
    });
    return c;
  };
  const first = await client();
  assert.equal(await ask(first, 'a'), 'a');

  // a new `to`, and a second forward that nobody uses
  const idle = `, { listen: 127.0.0.1:0, to: 127.0.0.1:${port(one)}, protocol: udp }]`;
  const retargeted = await agent.rt.reload(agentConfig([ref], 0, forward(two).replace(/]$/, idle)).config);
  assert.equal(retargeted.result, 'applied', retargeted.errors.join('; '));
  assert.deepEqual(retargeted.listeners.changed, ['tunnel.agent.forwards[0]']);
  assert.deepEqual(retargeted.listeners.added, ['tunnel.agent.forwards[1]']);
  assert.equal(tunnel.addresses()['udp[0]'], address, 'the forward keeps its socket');
  assert.equal(await ask(first, 'b'), 'b', 'an open association keeps its destination');
  const second = await client();
  assert.equal(await ask(second, 'c'), 'two:c', 'a new association goes to the new `to`');

  const removed = await agent.rt.reload(agentConfig([ref], 0, '    forwards: []').config);
  assert.equal(removed.result, 'applied', removed.errors.join('; '));
  assert.deepEqual(removed.listeners.removed, ['tunnel.agent.forwards[0]', 'tunnel.agent.forwards[1]']);
  assert.equal(tunnel.addresses()['udp[0]'], undefined);
  assert.equal(await ask(first, 'd'), 'd', 'open associations go on');
  const series = 'zipline_udp_dropped_total{listener="tunnel.agent.forwards[0]",code="ZL_DRAINING"}';
  const before = await seriesValue(series);
  (await client()).send('e', udpPort, host);
  await until(async () => (await seriesValue(series)) > before, 'a new client refused (ZL_DRAINING)');
  const retired = (): unknown[] => (tunnel.stats() as { retired_entries: unknown[] }).retired_entries;
  // (the unused one closed at once)
  assert.deepEqual(retired(), [{ name: 'tunnel.agent.forwards[0]', active: 2 }]);
  // the associations end with the session that carried them; then the socket closes
  tunnel.links[0]?.session?.destroy();
  await until(() => retired().length === 0, 'the removed forward closed after its last association');
  const rebind = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    rebind.once('error', reject);
    rebind.bind(udpPort, host, () => resolve());
  });
  rebind.close();
});

test("a relay's entry with other settings keeps its session (the next connection uses them); a new agent id makes new sessions while the old ones finish", async () => {
  const echo = await tcpEcho();
  cleanup.push(() => closeServer(echo));
  const relay = await startRelay('auto');
  const addr = relay.rt.relay?.address() ?? '';
  const pinned = (fp: string): string => `{ address: "${addr}", fingerprint: "${fp}" }`;
  const right = relay.rt.relay?.fingerprint ?? '';
  const wrong = `sha256:${'0'.repeat(64)}`;
  const first = agentConfig([pinned(right)], port(echo));
  const agent = await startRuntime(first.text);
  cleanup.push(() => agent.stop());
  const tunnel = agent.rt.agent;
  assert.ok(tunnel);
  const link = tunnel.links[0];
  await until(() => link?.state === 'up', 'pinned session up');
  const session = link?.session;
  const held = await dial(tunnel.addresses()['forwards[0]'] ?? '');
  cleanup.push(() => {
    held.destroy();
  });
  await roundTrip(held, 'before');

  // another pin for the same relay: the open session and its stream stay...
  const repinned = await agent.rt.reload(agentConfig([pinned(wrong)], port(echo)).config);
  assert.equal(repinned.result, 'applied', repinned.errors.join('; '));
  assert.deepEqual(repinned.listeners.changed, ['tunnel.agent']);
  assert.equal(tunnel.links[0], link);
  assert.equal(link?.session, session, 'the open session stays');
  await roundTrip(held, 'after the new pin');
  // ...and the next connection is checked against the new pin (ending the session resets `held`)
  held.on('error', () => {});
  session?.destroy();
  await until(() => /ZL_TUNNEL_TLS/.test(link?.lastError ?? ''), 'the relay refused by the new pin');
  const back = await agent.rt.reload(agentConfig([pinned(right)], port(echo)).config);
  assert.equal(back.result, 'applied', back.errors.join('; '));
  await until(() => link?.state === 'up', 'up again with the right pin');

  // a new id: a new session beside the old one, which finishes its stream
  const held2 = await dial(tunnel.addresses()['forwards[0]'] ?? '');
  cleanup.push(() => {
    held2.destroy();
  });
  await roundTrip(held2, 'as agent-under-test');
  const renamed = await agent.rt.reload(
    agentConfig([pinned(right)], port(echo), undefined, 'renamed').config,
  );
  assert.equal(renamed.result, 'applied', renamed.errors.join('; '));
  assert.notEqual(tunnel.links[0], link, 'a new link');
  await until(() => tunnel.links[0]?.state === 'up', 'a session as the new id');
  const agents = (): string[] =>
    ((relay.rt.relay?.stats().sessions ?? []) as { agent: string }[]).map((s) => s.agent).sort();
  assert.deepEqual(agents(), ['agent-under-test', 'renamed']);
  await roundTrip(held2, 'the old session still carries it');
  held2.end();
  await until(() => agents().length === 1, 'the old session closed after its stream');
  assert.deepEqual(agents(), ['renamed']);
});

test("the relay's TLS settings and listen at reload: new sessions get them, a session accepted before goes on; what cannot be used leaves it as it was", async () => {
  const echo = await tcpEcho();
  cleanup.push(() => closeServer(echo));
  const stateDir = tempDir('zl-relay-');
  const relayText = (listen: string, tls: string): string =>
    relayYaml('', tls)
      .replace('\n    listen: 127.0.0.1:0', `\n    listen: ${listen}`)
      .replace(/state_dir: .*/, `state_dir: ${stateDir}`);
  const relayConfig = (listen: string, tls: string): ValidConfig => {
    const loaded = loadConfigText(relayText(listen, tls), {});
    assert.ok(loaded.ok);
    return loaded.config;
  };
  const relay = await startRuntime(relayText('127.0.0.1:0', 'off'));
  cleanup.push(() => relay.stop());
  const first = relay.rt.relay?.address() ?? '';
  const agent = await startRuntime(agentConfig([`{ address: "${first}", tls: false }`], port(echo)).text);
  cleanup.push(() => agent.stop());
  const tunnel = agent.rt.agent;
  assert.ok(tunnel);
  await until(() => tunnel.links[0]?.state === 'up', 'a plain session');
  const held = await dial(tunnel.addresses()['forwards[0]'] ?? '');
  cleanup.push(() => {
    held.destroy();
  });
  await roundTrip(held, 'plain');

  // TLS on and another address
  const moved = await relay.rt.reload(relayConfig('127.0.0.2:0', 'auto'));
  assert.equal(moved.result, 'applied', moved.errors.join('; '));
  assert.deepEqual(moved.listeners.changed, ['tunnel.relay']);
  assert.deepEqual(moved.listeners.rebound, ['tunnel.relay']);
  const second = relay.rt.relay?.address() ?? '';
  assert.match(second, /^127\.0\.0\.2:\d+$/);
  const fingerprint = relay.rt.relay?.fingerprint;
  assert.ok(fingerprint);
  await assert.rejects(dial(first), /ECONNREFUSED/, 'the old address no longer accepts');
  await roundTrip(held, 'the plain session goes on');
  const pinned = await startRuntime(
    agentConfig([`{ address: "${second}", fingerprint: "${fingerprint}" }`], port(echo), undefined, 'pinned')
      .text,
  );
  cleanup.push(() => pinned.stop());
  await until(() => pinned.rt.agent?.links[0]?.state === 'up', 'a TLS session at the new address, pinned');

  // an address it cannot bind, a certificate it cannot read: partial, nothing moves
  const taken = await tcpServer(() => {});
  cleanup.push(() => closeServer(taken));
  const missing = `{ cert: ${stateDir}/none.crt, key: ${stateDir}/none.key }`;
  const refused = await relay.rt.reload(relayConfig(`127.0.0.1:${port(taken)}`, missing));
  assert.equal(refused.result, 'partial');
  assert.match(
    refused.errors.join('\n'),
    /cannot read the certificate .*none\.crt.*; the previous certificate stays/,
  );
  assert.match(
    refused.errors.join('\n'),
    /cannot listen on 127\.0\.0\.1:\d+.*; the relay stays on 127\.0\.0\.2:\d+/,
  );
  assert.equal(relay.rt.relay?.address(), second);
  assert.equal(relay.rt.relay?.fingerprint, fingerprint);
  await roundTrip(held, 'still plain');
});
