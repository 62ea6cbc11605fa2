/** `npm start`'s quickstart as a new user meets it: the banner, then socat through the proxy. */
import assert from 'node:assert/strict';
import { type ChildProcessByStdio, execFile, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import { until } from '../helpers/net.js';
import { ROOT } from '../helpers/zipline.js';

function socat(args: string[], input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = execFile('socat', args, { timeout: 10_000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    );
    p.stdin?.end(input);
  });
}

function curlGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('curl', ['-sS', '--fail', url], { timeout: 10_000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    );
  });
}

type Quickstart = ChildProcessByStdio<null, Readable, Readable>;

/** `npm start`'s script with every address on port 0 but those in `listen`, in a process group of its own. */
function spawnQuickstart(listen: Record<string, string> = {}): Quickstart {
  return spawn(process.execPath, [join(ROOT, 'dist/scripts/quickstart.js')], {
    env: {
      ...process.env,
      ZIPLINE_ADMIN_LISTEN: '127.0.0.1:0',
      QUICKSTART_TCP_LISTEN: '127.0.0.1:0',
      QUICKSTART_HTTP_LISTEN: '127.0.0.1:0',
      QUICKSTART_UDP_LISTEN: '127.0.0.1:0',
      QUICKSTART_RELAY_LISTEN: '127.0.0.1:0',
      QUICKSTART_SOCKS5_LISTEN: '127.0.0.1:0',
      QUICKSTART_HTTP_PROXY_LISTEN: '127.0.0.1:0',
      ...listen,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // a process group of its own, signalled as a whole
  });
}

/** Its banner, once printed (rejects if it exits first). */
function banner(qs: Quickstart): Promise<string> {
  let out = '';
  qs.stdout.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    qs.stdout.on('data', (c: string) => {
      out += c;
      if (/Ctrl-C/.test(out)) resolve(out);
    });
    qs.once('exit', (code) => reject(new Error(`quickstart exited ${code}: ${out}`)));
  });
}

test('quickstart: prints the admin URL; curl reaches both HTTP origins (directly and through the tunnel); socat echoes over TCP and UDP; a port that is taken is replaced by a free one', async () => {
  // the UDP and HTTP addresses asked for are taken (another quickstart running, say)
  const takenUdp = createSocket('udp4');
  await new Promise<void>((resolve) => takenUdp.bind(0, '127.0.0.1', resolve));
  const takenTcp = createServer();
  await new Promise<void>((resolve) => takenTcp.listen(0, '127.0.0.1', resolve));
  const udpTaken = `127.0.0.1:${takenUdp.address().port}`;
  const httpTaken = `127.0.0.1:${(takenTcp.address() as AddressInfo).port}`;
  const qs = spawnQuickstart({ QUICKSTART_HTTP_LISTEN: httpTaken, QUICKSTART_UDP_LISTEN: udpTaken });
  try {
    const out = await banner(qs);
    const admin = /admin \/ dashboard:\s+(http:\S+)/.exec(out)?.[1];
    const tcp = /socat - (TCP:\S+)/.exec(out)?.[1];
    const udp = /socat - (UDP:\S+)/.exec(out)?.[1];
    const http = /curl (http:\S+)/.exec(out)?.[1];
    const socks = /curl --socks5-hostname (\S+) (http:\S+)/.exec(out);
    assert.ok(admin && tcp && udp && http && socks, out);
    assert.notEqual(udp, `UDP:${udpTaken}`);
    assert.ok(!http.startsWith(`http://${httpTaken}/`), http);
    const origins = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const body = await curlGet(http);
      origins.add((JSON.parse(body) as { origin: string }).origin);
    }
    assert.deepEqual([...origins].sort(), ['demo-a', 'demo-b'], 'round robin over the two demo origins');
    assert.equal((await fetch(`${admin}healthz`)).status, 200);
    const viaTunnel = await new Promise<string>((resolve, reject) => {
      execFile(
        'curl',
        ['-sS', '--fail', '--socks5-hostname', socks[1] as string, socks[2] as string],
        { timeout: 20_000 },
        (err, stdout) => (err ? reject(err) : resolve(stdout)),
      );
    });
    assert.match((JSON.parse(viaTunnel) as { origin: string }).origin, /^demo-[ab]$/);
    assert.equal(await socat(['-t', '2', '-', tcp], 'hello through zipline\n'), 'hello through zipline\n');
    assert.equal(await socat(['-t', '2', '-', udp], 'udp hello\n'), 'udp hello\n');
    const stats = (await (await fetch(`${admin}stats`)).json()) as {
      upstreams: { echo: { servers: unknown[] } };
    };
    assert.equal(stats.upstreams.echo.servers.length, 2, 'two demo origins');
  } finally {
    // the whole group, as `timeout` and systemd's control-group kill do (a terminal's Ctrl-C
    // too, with SIGINT): zipline gets the signal itself and the quickstart's copy of it
    takenUdp.close();
    takenTcp.close();
    if (qs.exitCode === null && qs.signalCode === null) {
      process.kill(-(qs.pid as number), 'SIGTERM');
      const [code] = (await once(qs, 'exit')) as [number | null];
      assert.equal(code, 0, 'drains and exits 0 (not a forced exit 1 on the copy)');
    }
  }
});

/** Exited: no such process, or one waiting to be reaped (its parent, the old zipline, is gone). */
function exited(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

test('quickstart: upgraded in place (POST /upgrade), it follows the new zipline: the demo origins stay, and a signal to the quickstart drains the new process and exits', async () => {
  const qs = spawnQuickstart();
  let successor: number | null = null;
  let err = '';
  qs.stderr.setEncoding('utf8');
  qs.stderr.on('data', (c: string) => {
    err += c;
  });
  try {
    const out = await banner(qs);
    const admin = /admin \/ dashboard:\s+(http:\S+)/.exec(out)?.[1];
    const http = /curl (http:\S+)/.exec(out)?.[1];
    assert.ok(admin && http, out);
    const res = await fetch(`${admin}upgrade`, { method: 'POST' });
    const outcome = (await res.json()) as { result: string; pid: number };
    assert.equal(outcome.result, 'upgraded');
    successor = outcome.pid;
    // the old zipline has drained and exited: the quickstart says so and stays
    await until(() => /upgraded in place; process \d+ serves now/.test(err), 'word of the upgrade', 15_000);
    assert.equal(qs.exitCode, null, 'the quickstart runs on');
    assert.match((JSON.parse(await curlGet(http)) as { origin: string }).origin, /^demo-[ab]$/);
    // SIGINT to the quickstart alone (not its group): passed on to the new zipline
    qs.kill('SIGINT');
    const [code] = (await once(qs, 'exit')) as [number | null];
    assert.equal(code, 0);
    assert.ok(exited(successor), 'the new zipline is gone too');
  } finally {
    if (qs.exitCode === null && qs.signalCode === null) process.kill(-(qs.pid as number), 'SIGKILL');
    if (successor !== null) {
      try {
        process.kill(successor, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
});
