/**
 * zipline itself out of file descriptors (a running process's soft limit lowered with prlimit):
 * the upstream connect that fails for it is ZL_LOCAL_EXHAUSTED, never held against the server
 * (passive health, circuit breaker) and never retried; once descriptors are back, traffic flows
 * at once. HTTP and TCP, in a real zipline process.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { nativePump } from '../../src/l4/native-pump.js';
import { have } from '../helpers/daemons.js';
import { KeepAliveClient, testPeers } from '../helpers/http.js';
import { closeServer, dial, port, readAll, splitAddress, tcpEcho, until } from '../helpers/net.js';
import { spawnZipline } from '../helpers/zipline.js';

const peers = testPeers();
after(() => peers.cleanup());

/** Sets a running process's soft descriptor limit (the hard one stays, so it can go back up). */
function prlimit(pid: number, n: number): void {
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${n}:`]);
}

function softLimit(pid: number): number {
  return Number(/Max open files\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1]);
}

/**
 * Lowers the soft limit so that exactly `n` more descriptors can be made. A new descriptor takes
 * the lowest free number, which must be under the limit; the open ones need not be contiguous
 * (a closed one leaves a hole), so the limit is the (n+1)-th free number, not a count.
 */
function allowNew(pid: number, n: number): void {
  const open = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
  let limit = 0;
  for (let free = 0; ; limit++) {
    if (open.has(limit)) continue;
    if (free === n) break;
    free++;
  }
  prlimit(pid, limit);
}

/**
 * Fills the free descriptor numbers below libuv's spare one (its `/dev/null`, opened at the first
 * listen) with idle connections to `address`, each accepted into the lowest free number. Out of
 * descriptors for real, no number below the limit is free; `allowNew(pid, 0)` on a process with
 * a hole below the spare would put the limit there, where libuv's EMFILE trick (close the spare,
 * accept, close) cannot work and its loop spins: an artefact of lowering the limit, not zipline's.
 */
async function fillHolesBelowSpare(pid: number, address: string, keep: Socket[]): Promise<void> {
  const fds = (): number[] => readdirSync(`/proc/${pid}/fd`).map(Number);
  const target = (fd: number): string => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return ''; // closed meanwhile
    }
  };
  const spare = Math.max(...fds().filter((fd) => target(fd) === '/dev/null'));
  const holes = (): number => {
    const open = new Set(fds());
    let n = 0;
    for (let fd = 0; fd < spare; fd++) if (!open.has(fd)) n++;
    return n;
  };
  const [host, p] = splitAddress(address);
  for (let i = holes(); i > 0; i--) keep.push(connect(p, host).on('error', () => {}));
  await until(() => holes() === 0, 'the holes below the spare descriptor filled');
}

function config(server: string, listener: string): string {
  return `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 2s
upstreams:
  app:
    servers: [${server}]
listeners:
  - { name: web, protocol: ${listener}, listen: 127.0.0.1:0, upstream: app }
`;
}

type ServerStats = { failures: number; state: string };
type UpstreamStats = { circuit?: { state: string; opened: number }; servers: ServerStats[] };

describe('local exhaustion', {
  skip: process.platform === 'linux' && have('prlimit') ? false : 'needs Linux and prlimit (util-linux)',
}, () => {
  test('zipline out of descriptors: 503 ZL_LOCAL_EXHAUSTED, the server not blamed (breaker closed, no passive failure), served again at once', async () => {
    const o = await peers.origin();
    const z = await spawnZipline(config(o.address, 'http'));
    const pid = z.proc.pid as number;
    const clients: KeepAliveClient[] = [];
    try {
      const addr = await z.listener('web');
      for (let i = 0; i < 8; i++) clients.push(await KeepAliveClient.open(addr));
      await until(async () => (await z.stats()).listeners.web?.active === 8, 'the 8 clients accepted');
      const soft = softLimit(pid);
      allowNew(pid, 0);
      const answers = await Promise.all(clients.map((c) => c.send('GET /x HTTP/1.1\r\nHost: a\r\n\r\n')));
      const exhausted = answers.filter(
        (r) => r.status === 503 && r.headers.get('x-zipline-error')?.[0] === 'ZL_LOCAL_EXHAUSTED',
      );
      assert.ok(exhausted.length > 0, `statuses: ${answers.map((r) => r.status).join(' ')}`);
      for (const c of clients) c.close();
      prlimit(pid, soft);
      assert.equal((await fetch(`http://${addr}/after`)).status, 200);
      const app = (await z.stats()).upstreams.app as unknown as UpstreamStats;
      assert.deepEqual(app.circuit, { state: 'closed', opened: 0 });
      assert.equal(app.servers[0]?.failures, 0, 'no passive-health failure');
      assert.equal(app.servers[0]?.state, 'up');
    } finally {
      for (const c of clients) c.close();
      await z.stop();
    }
  });

  test('connections waiting to be accepted while descriptors are out do not spin the process (they are closed, as libuv does)', async () => {
    const o = await peers.origin();
    const z = await spawnZipline(config(o.address, 'http'));
    const pid = z.proc.pid as number;
    const waiting: Socket[] = [];
    try {
      const addr = await z.listener('web');
      const soft = softLimit(pid);
      await fillHolesBelowSpare(pid, addr, waiting);
      allowNew(pid, 0);
      const ticks = (): number => {
        const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
        return Number(f[11]) + Number(f[12]); // utime + stime, in clock ticks (1/100 s)
      };
      const [host, p] = splitAddress(addr);
      for (let i = 0; i < 8; i++) {
        const c = connect(p, host);
        c.on('error', () => {});
        waiting.push(c);
      }
      // the native acceptor used to retry accept4 on EMFILE in a loop: two threads at 100 %
      const before = ticks();
      await new Promise((r) => setTimeout(r, 1000)); // a measuring window, not a synchronisation
      const used = ticks() - before;
      assert.ok(used < 50, `${used} ticks of CPU in 1 s with descriptors out`);
      prlimit(pid, soft);
      assert.equal((await fetch(`http://${addr}/after`)).status, 200);
    } finally {
      for (const c of waiting) c.destroy();
      await z.stop();
    }
  });

  test("the native acceptor's failed accepts are counted and logged with the limit to raise (libuv's shedding is silent)", {
    skip: nativePump.available ? false : 'the native acceptor (addon)',
  }, async () => {
    const o = await peers.origin();
    const z = await spawnZipline(config(o.address, 'http'));
    const pid = z.proc.pid as number;
    try {
      const addr = await z.listener('web');
      const [host, p] = splitAddress(addr);
      const soft = softLimit(pid);
      const counted = async (): Promise<boolean> =>
        /zipline_accept_errors_total\{listener="web",code="EMFILE"\} [1-9]/.test(
          await (await fetch(`${z.admin}metrics`)).text(),
        );
      // libuv and the native thread both accept on the socket: whichever wakes first takes the
      // waiting connections (libuv closes them with its spare descriptor, silently). Rounds of
      // 8 until the native thread has met EMFILE; it does in most rounds.
      for (let round = 0; round < 20 && !(await counted()); round++) {
        allowNew(pid, 0);
        const waiting = Array.from({ length: 8 }, () => connect(p, host).on('error', () => {}));
        await Promise.all(waiting.map((c) => new Promise((r) => c.once('close', r))));
        prlimit(pid, soft);
      }
      assert.ok(await counted(), 'zipline_accept_errors_total counted the EMFILE');
      const warning = JSON.parse(await z.waitForLog(/out of file descriptors accepting connections/));
      assert.deepEqual(
        [warning.level, warning.code, warning.errno],
        ['warn', 'ZL_LOCAL_EXHAUSTED', 'EMFILE'],
      );
      assert.equal((await fetch(`http://${addr}/after`)).status, 200);
    } finally {
      await z.stop();
    }
  });

  test('tcp: a connection whose upstream connect finds no descriptor is closed, the server not blamed, the next one served', async () => {
    const echo = await tcpEcho();
    const z = await spawnZipline(config(`127.0.0.1:${port(echo)}`, 'tcp'));
    const pid = z.proc.pid as number;
    try {
      const addr = await z.listener('web');
      const soft = softLimit(pid);
      for (let i = 0; i < 4; i++) {
        // one descriptor left: the accepted connection takes it, its upstream connect finds none
        // (counted again each time: the admin connection of the calls above may have closed since)
        allowNew(pid, 1);
        const c = await dial(addr).catch(() => null);
        if (c === null) continue;
        c.end('x');
        await readAll(c).catch(() => null);
      }
      prlimit(pid, soft);
      const ok = await dial(addr);
      ok.end('served');
      assert.equal((await readAll(ok)).toString(), 'served');
      const text = await (await fetch(`${z.admin}metrics`)).text();
      assert.match(text, /zipline_upstream_connect_failures_total\{[^}]*code="ZL_LOCAL_EXHAUSTED"\} [1-9]/);
      const app = (await z.stats()).upstreams.app as unknown as UpstreamStats;
      assert.equal(app.servers[0]?.failures, 0, 'no passive-health failure');
      assert.equal(app.servers[0]?.state, 'up');
    } finally {
      await z.stop();
      await closeServer(echo);
    }
  });
});
