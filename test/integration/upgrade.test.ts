/**
 * `zipline run` upgraded in place (POST /upgrade, SIGUSR2): a new process takes every listening
 * socket, the old one drains. Real processes, real sockets.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { migratesQueuedConnections } from '../../src/workers/queue-migration.js';
import { getOnce, startOrigin } from '../helpers/http.js';
import { closeServer, dial, port, refusedPort, tcpEcho, udpClient, udpEcho, until } from '../helpers/net.js';
import { relayYaml, TUNNEL_TOKEN } from '../helpers/tunnel.js';
import { spawnZipline, startRuntime, stopSuccessor, type ZiplineProcess } from '../helpers/zipline.js';

const cleanup: Array<() => unknown> = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

async function pidOf(z: ZiplineProcess): Promise<number> {
  return (JSON.parse((await getOnce(new URL(z.admin).host, '/stats')).body) as { pid: number }).pid;
}

/** Requests on new connections, one after another, until stopped: every failure kept. */
class NewConnections {
  ok = 0;
  readonly failures: string[] = [];
  private stopped = false;
  readonly done: Promise<void>;
  constructor(address: string) {
    this.done = this.run(address);
  }
  private async run(address: string): Promise<void> {
    while (!this.stopped) {
      try {
        const r = await getOnce(address);
        if (r.status === 200 && r.body === 'ok') this.ok++;
        else this.failures.push(`${r.status} ${r.body}`);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        this.failures.push(`${e.code ?? ''} ${e.message}`);
      }
    }
  }
  stop(): Promise<void> {
    this.stopped = true;
    return this.done;
  }
}

async function echoOnce(s: Socket, text: string): Promise<string> {
  s.write(text);
  const [d] = (await once(s, 'data')) as [Buffer];
  return d.toString();
}

async function start(): Promise<{ z: ZiplineProcess; outputClosed: Promise<unknown> }> {
  const origin = await startOrigin((_req, res) => res.end('ok'));
  const echo = await tcpEcho();
  const uecho = await udpEcho();
  cleanup.push(
    () => origin.close(),
    () => closeServer(echo),
    () => uecho.close(),
  );
  const z = await spawnZipline(`
log: { access: off }
drain_timeout: 10s
upstreams:
  web: { servers: [${origin.address}] }
  echo: { servers: [127.0.0.1:${port(echo)}] }
  uecho: { servers: [127.0.0.1:${port(uecho)}] }
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, routes: [{ upstream: web }] }
  - { name: tcp, protocol: tcp, listen: 127.0.0.1:0, upstream: echo }
  - { name: udp, protocol: udp, listen: 127.0.0.1:0, upstream: uecho, udp: { responses: 1 } }
`);
  // the new process writes to the same output: it closes when both processes are gone
  const outputClosed = once(z.proc.stdout as NodeJS.ReadableStream, 'close');
  cleanup.push(() => z.stop('SIGKILL'));
  return { z, outputClosed };
}

describe('upgrade in place', { skip: process.platform === 'win32' ? 'not on Windows' : false }, () => {
  test('POST /upgrade: the new process takes every socket; no connection is refused; open ones end in the old', async () => {
    const { z, outputClosed } = await start();
    const oldPid = z.proc.pid as number;
    const web = await z.listener('web');
    const tcp = await z.listener('tcp');
    const udp = await z.listener('udp');
    const held = await dial(tcp);
    assert.equal(await echoOnce(held, 'a'), 'a');
    const clients = new NewConnections(web);
    await until(() => clients.ok >= 20, 'requests through the old process');

    const res = await fetch(`${z.admin}upgrade`, { method: 'POST' });
    const outcome = (await res.json()) as { result: string; pid: number; sockets: number };
    assert.equal(res.status, 200, JSON.stringify(outcome));
    assert.equal(outcome.result, 'upgraded');
    assert.notEqual(outcome.pid, oldPid);
    cleanup.push(() => stopSuccessor(z, outcome.pid, outputClosed));
    assert.equal(outcome.sockets, 4, 'admin, web, tcp and udp');
    // the admin address, with its port, answers from the new process now
    assert.equal(await pidOf(z), outcome.pid);

    const atUpgrade = clients.ok;
    await until(() => clients.ok >= atUpgrade + 20, 'requests after the upgrade');
    // the connection the old process accepted is still its own, and still served
    assert.equal(z.proc.exitCode, null, 'the old process drains while a connection is open');
    assert.equal(await echoOnce(held, 'b'), 'b');
    // new TCP connections and UDP datagrams go to the new process, on the same ports
    const fresh = await dial(tcp);
    assert.equal(await echoOnce(fresh, 'c'), 'c');
    fresh.destroy();
    const u = await udpClient();
    const [hp, pp] = [udp.slice(0, udp.lastIndexOf(':')), Number(udp.slice(udp.lastIndexOf(':') + 1))];
    u.send('u1', pp, hp);
    const [reply] = (await once(u, 'message')) as [Buffer];
    assert.equal(reply.toString(), 'u1');
    u.close();

    held.end();
    assert.equal(await z.exited, 0, 'the old process exits once its last connection ended');
    await clients.stop();
    assert.deepEqual(clients.failures, [], 'no request failed across the upgrade');
    assert.equal(await pidOf(z), outcome.pid);
    await stopSuccessor(z, outcome.pid, outputClosed);
  });

  test('SIGUSR2: a new process that cannot start leaves the old one serving; a good one takes over', async () => {
    const { z, outputClosed } = await start();
    const oldPid = z.proc.pid as number;
    const web = await z.listener('web');
    const good = readFileSync(z.configFile, 'utf8');
    writeFileSync(z.configFile, `${good}\nlisteners: [[[\n`);
    z.proc.kill('SIGUSR2');
    const failed = await z.waitForLog(/upgrade failed/);
    assert.match(failed, /ZL_UPGRADE_FAILED/);
    assert.match(failed, /exited \(code \d+\) before it served/);
    assert.deepEqual(await getOnce(web), { status: 200, body: 'ok' });
    assert.equal(await pidOf(z), oldPid);

    writeFileSync(z.configFile, good);
    z.proc.kill('SIGUSR2');
    const line = await z.waitForLog(/"msg":"upgrade: process \d+ serves/);
    const newPid = (JSON.parse(line) as { new_pid: number }).new_pid;
    cleanup.push(() => stopSuccessor(z, newPid, outputClosed));
    assert.equal(await z.exited, 0);
    assert.equal(await pidOf(z), newPid);
    assert.deepEqual(await getOnce(web), { status: 200, body: 'ok' });
    await stopSuccessor(z, newPid, outputClosed);
  });

  test('a tunnel relay upgraded: its agents open their next session with the new process at once; open streams finish in the old', async () => {
    const echo = await tcpEcho();
    cleanup.push(() => closeServer(echo));
    const relay = await spawnZipline(relayYaml());
    const outputClosed = once(relay.proc.stdout as NodeJS.ReadableStream, 'close');
    cleanup.push(() => relay.stop('SIGKILL'));
    const relayAddress = ((await relay.stats()).tunnel as { relay: { address: string } }).relay.address;
    // a slow reconnect: only the GOAWAY's retry-after 0 brings the next session at once
    const agent = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
drain_timeout: 1s
tunnel:
  agent:
    id: upgraded-relay
    relays: [{ address: "${relayAddress}", tls: false }]
    token: "${TUNNEL_TOKEN}"
    reconnect: { base: 30s, max: 60s }
    forwards: [{ listen: 127.0.0.1:0, to: 127.0.0.1:${port(echo)} }]
`);
    cleanup.push(() => agent.stop());
    const tunnel = agent.rt.agent;
    assert.ok(tunnel);
    await until(() => tunnel.links[0]?.state === 'up', 'a session with the relay');
    const forward = tunnel.addresses()['forwards[0]'] ?? '';
    const held = await dial(forward);
    assert.equal(await echoOnce(held, 'a'), 'a');

    const res = await fetch(`${relay.admin}upgrade`, { method: 'POST' });
    const outcome = (await res.json()) as { result: string; pid: number };
    assert.equal(outcome.result, 'upgraded');
    cleanup.push(() => stopSuccessor(relay, outcome.pid, outputClosed));
    // a new connection while the old session still carries `held`: through a new session
    const fresh = await dial(forward);
    assert.equal(await echoOnce(fresh, 'b'), 'b');
    fresh.destroy();
    assert.equal(tunnel.links[0]?.state, 'up');
    const retired = (tunnel.stats() as { retired_relays: { address: string; streams: number }[] })
      .retired_relays;
    assert.deepEqual(
      retired.map((r) => [r.address, r.streams]),
      [[relayAddress, 1]],
    );
    assert.equal(relay.proc.exitCode, null, 'the old relay process drains while its stream is open');
    assert.equal(await echoOnce(held, 'c'), 'c');
    held.end();
    assert.equal(await relay.exited, 0);
    await stopSuccessor(relay, outcome.pid, outputClosed);
  });

  test('with workers: the new primary keeps the ports (port 0 too) and its workers take over; no connection is refused', {
    skip:
      process.platform !== 'linux'
        ? 'workers need SO_REUSEPORT (Linux)'
        : process.env.ZIPLINE_NO_NATIVE === '1'
          ? 'the portable pass (ZIPLINE_NO_NATIVE=1): workers need the native module'
          : false,
  }, async () => {
    const origin = await startOrigin((_req, res) => res.end('ok'));
    cleanup.push(() => origin.close());
    // a fixed port below the ephemeral range (nothing else is given it), and port 0
    const fixed = await refusedPort();
    const z = await spawnZipline(`
log: { access: off }
drain_timeout: 10s
workers: 2
upstreams:
  web: { servers: [${origin.address}] }
listeners:
  - { name: fixed, protocol: http, listen: 127.0.0.1:${fixed}, routes: [{ upstream: web }] }
  - { name: any, protocol: http, listen: 127.0.0.1:0, routes: [{ upstream: web }] }
`);
    const outputClosed = once(z.proc.stdout as NodeJS.ReadableStream, 'close');
    cleanup.push(() => z.stop('SIGKILL'));
    const any = await z.listener('any');
    // several clients each, so that connections are being accepted when the old workers stop
    const addresses = [`127.0.0.1:${fixed}`, any];
    const clients = Array.from({ length: 8 }, (_, i) => new NewConnections(addresses[i % 2] as string));
    await until(() => clients.every((c) => c.ok >= 20), 'requests through the old workers');

    const res = await fetch(`${z.admin}upgrade`, { method: 'POST' });
    const outcome = (await res.json()) as { result: string; pid: number };
    assert.equal(res.status, 200, JSON.stringify(outcome));
    cleanup.push(() => stopSuccessor(z, outcome.pid, outputClosed));
    assert.equal(await z.exited, 0, 'the old primary exits once its workers drained');
    const after = clients.map((c) => c.ok);
    await until(
      () => clients.every((c, i) => c.ok >= (after[i] ?? 0) + 20),
      'requests through the new workers',
    );
    for (const c of clients) await c.stop();
    // Each worker has a SO_REUSEPORT socket of its own: the kernel resets the connections still
    // waiting in an old worker's accept queue when it closes (docs/OPERATIONS.md), unless
    // net.ipv4.tcp_migrate_req moves them to another socket of the group. Nothing else may fail.
    const failures = clients.flatMap((c) => c.failures);
    const ok = clients.reduce((n, c) => n + c.ok, 0);
    if (migratesQueuedConnections()) assert.deepEqual(failures, [], 'no request failed across the upgrade');
    else {
      assert.ok(
        failures.every((f) => f.startsWith('ECONNRESET ')),
        `only resets of queued connections: ${failures.join(', ')}`,
      );
      assert.ok(failures.length <= ok / 100, `${failures.length} resets for ${ok} requests`);
    }
    assert.equal(await z.listener('any'), any, 'the port-0 listener kept its port');
    // the old primary said so when the kernel would reset them (it has exited: its lines are in)
    const told = [...z.stdout, ...z.stderr].some((l) => l.includes('tcp_migrate_req=1'));
    assert.equal(told, !migratesQueuedConnections());
    await stopSuccessor(z, outcome.pid, outputClosed);
  });

  test('SIGUSR2 during a drain is refused: no new process starts', async () => {
    const { z, outputClosed } = await start();
    const held = await dial(await z.listener('tcp'));
    assert.equal(await echoOnce(held, 'a'), 'a');
    z.proc.kill('SIGTERM');
    await z.waitForLog(/"msg":"draining"/);
    z.proc.kill('SIGUSR2');
    assert.match(await z.waitForLog(/upgrade refused/), /ZL_UPGRADE_FAILED.*the process is draining/);
    held.end();
    assert.equal(await z.exited, 0);
    // nothing else writes to the output: no process was started
    await outputClosed;
    assert.equal(z.stdout.filter((l) => l.includes('upgrade: starting')).length, 0);
  });
});
