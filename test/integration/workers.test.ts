/**
 * `workers: 2` on the real `zipline run` process: both workers serve every listener (HTTP, TCP,
 * UDP, on SO_REUSEPORT sockets), the admin server adds them up, a killed worker is replaced, a
 * reload reaches every worker, SIGTERM drains them all, and no worker outlives its primary.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { HEAP_FLAGS } from '../../src/cli/heap-flags.js';
import { renderDashboard } from '../helpers/dashboard.js';
import { getOnce, type Origin, profileAfterLeaving, startOrigin } from '../helpers/http.js';
import {
  closeServer,
  dial,
  readAll,
  splitAddress,
  tcpEcho,
  udpClient,
  udpEcho,
  until,
} from '../helpers/net.js';
import { runCli, spawnZipline, writeConfig, type ZiplineProcess } from '../helpers/zipline.js';

const linux = process.platform === 'linux';

interface WorkerStat {
  index: number;
  pid: number | null;
  state: string;
  restarts: number;
  last_exit: string | null;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function workers(z: ZiplineProcess): Promise<WorkerStat[]> {
  return (await z.stats()).workers as WorkerStat[];
}

/** Access lines of `listener` on stdout, by the worker that wrote them. */
function linesByWorker(z: ZiplineProcess, listener: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const line of z.stdout) {
    if (!line.startsWith('{')) continue;
    const e = JSON.parse(line) as { worker?: number; listener?: string };
    if (e.listener === listener && typeof e.worker === 'number')
      out.set(e.worker, (out.get(e.worker) ?? 0) + 1);
  }
  return out;
}

async function metric(z: ZiplineProcess, series: string): Promise<number> {
  const text = await (await fetch(`${z.admin}metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? Number.NaN : Number(line.slice(series.length + 1));
}

function config(origin: Origin, echo: number, udpEchoPort: number, extra = ''): string {
  return `
admin: { listen: 127.0.0.1:0 }
log: { level: info, access: stdout }
workers: 2
drain_timeout: 10s
upstreams:
  web: { servers: [${origin.address}] }
  echo: { servers: [127.0.0.1:${echo}] }
  uecho: { servers: [127.0.0.1:${udpEchoPort}] }
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, upstream: web }
  - { name: tcp, protocol: tcp, listen: 127.0.0.1:0, upstream: echo }
  - { name: udp, protocol: udp, listen: 127.0.0.1:0, upstream: uecho, udp: { responses: 1 } }
${extra}`;
}

const skip = !linux
  ? 'SO_REUSEPORT workers are Linux-only'
  : process.env.ZIPLINE_NO_NATIVE === '1'
    ? 'the portable pass (ZIPLINE_NO_NATIVE=1): workers need the native module'
    : false;

describe('workers: 2', { skip }, () => {
  let origin: Origin;
  let echo: Server;
  let uecho: Awaited<ReturnType<typeof udpEcho>>;
  /** Requests the origin holds until the test lets them go (the drain test). */
  const held: (() => void)[] = [];

  before(async () => {
    origin = await startOrigin((req, res) => {
      const answer = (): void => {
        res.end(`ok ${req.url}`);
      };
      if (req.url === '/hold') held.push(answer);
      else answer();
    });
    echo = await tcpEcho();
    uecho = await udpEcho();
  });
  after(async () => {
    await origin.close();
    await closeServer(echo);
    uecho.close();
  });

  const start = (extra = ''): Promise<ZiplineProcess> => {
    const echoPort = (echo.address() as { port: number }).port;
    const udpPort = uecho.address().port;
    return spawnZipline(config(origin, echoPort, udpPort, extra));
  };

  test('both workers serve HTTP, TCP and UDP; /stats, /metrics and /readyz add them up', async () => {
    const z = await start();
    try {
      const ws = await workers(z);
      assert.equal(ws.length, 2);
      assert.deepEqual(
        ws.map((w) => w.state),
        ['running', 'running'],
      );
      const pids = ws.map((w) => w.pid as number);
      assert.notEqual(pids[0], pids[1]);
      assert.ok(!pids.includes(z.proc.pid as number), 'workers are processes of their own');
      for (const pid of pids) {
        // the heap flags of `zipline run` reach the workers too
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        for (const flag of HEAP_FLAGS) assert.ok(cmdline.includes(flag), `${flag} in ${cmdline.join(' ')}`);
      }
      assert.equal((await fetch(`${z.admin}readyz`)).status, 200);
      const page = await renderDashboard(z.admin);
      assert.match(page, /<h2>Workers<\/h2>/);
      for (const pid of pids) assert.match(page, new RegExp(`<td>${pid}</td><td class="up">running</td>`));
      // a CPU profile of a chosen worker; an index that is not a worker is refused
      const prof = await fetch(`${z.admin}debug/profile?seconds=1&worker=1`);
      assert.equal(prof.status, 200);
      assert.ok(Array.isArray(((await prof.json()) as { nodes?: unknown }).nodes), 'a .cpuprofile');
      await profileAfterLeaving(z.admin, '&worker=1'); // the worker's profile ends with its client
      const badWorker = await fetch(`${z.admin}debug/profile?seconds=1&worker=2`);
      assert.equal(badWorker.status, 400);
      assert.equal(badWorker.headers.get('x-zipline-error'), 'ZL_ADMIN_BAD_REQUEST');

      const web = await z.listener('web');
      const results = await Promise.all(Array.from({ length: 40 }, (_, i) => getOnce(web, `/r${i}`)));
      for (const [i, r] of results.entries()) assert.deepEqual(r, { status: 200, body: `ok /r${i}` });
      await until(
        () => [...linesByWorker(z, 'web').values()].reduce((a, n) => a + n, 0) === 40,
        'access lines',
      );
      const byWorker = linesByWorker(z, 'web');
      assert.deepEqual(
        [...byWorker.keys()].sort(),
        [0, 1],
        `both workers served: ${JSON.stringify([...byWorker])}`,
      );
      assert.equal(await metric(z, 'zipline_downstream_connections_total{listener="web"}'), 40);
      assert.equal(await metric(z, 'zipline_workers_running'), 2);
      // a state gauge is not summed: healthy in every worker is 1, not 2
      assert.equal(
        await metric(z, `zipline_upstream_server_healthy{upstream="web",server="${origin.address}"}`),
        1,
      );

      const tcp = await z.listener('tcp');
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const s = await dial(tcp);
          s.end(`hello ${i}`);
          assert.equal((await readAll(s)).toString(), `hello ${i}`);
        }),
      );
      await until(() => [...linesByWorker(z, 'tcp').values()].reduce((a, n) => a + n, 0) === 20, 'tcp lines');
      assert.equal(linesByWorker(z, 'tcp').size, 2, 'both workers proxied TCP');

      const [uhost, uport] = splitAddress(await z.listener('udp'));
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const c = await udpClient();
          const reply = once(c, 'message');
          c.send(`dgram ${i}`, uport, uhost);
          const [msg] = (await reply) as [Buffer];
          assert.equal(msg.toString(), `dgram ${i}`);
          c.close();
        }),
      );
      const stats = await z.stats();
      assert.equal(stats.listeners.web?.address, web, 'one address for the listener, as in one process');
      assert.equal(
        stats.upstreams.web?.servers[0]?.total,
        40,
        'per-server totals are the sum over the workers',
      );
    } finally {
      await z.stop();
    }
  });

  test('a killed worker is replaced while the other serves; a reload reaches every worker', async () => {
    const z = await start();
    try {
      const web = await z.listener('web');
      const [w0] = await workers(z);
      // both workers count connections; a scrape sees them before worker 0 dies
      for (let i = 0; i < 20; i++) assert.equal((await getOnce(web, '/before')).status, 200);
      await until(() => linesByWorker(z, 'web').get(0) !== undefined, 'worker 0 served some');
      const series = 'zipline_downstream_connections_total{listener="web"}';
      const counted = await metric(z, series);
      assert.ok(counted >= 20, `${series} = ${counted}`);
      process.kill(w0?.pid as number, 'SIGKILL');
      // (connections queued on a dying worker's socket are reset with it, as with nginx's
      // reuseport: docs/OPERATIONS.md) once it is gone, the other worker takes every connection
      await until(() => !alive(w0?.pid as number), 'worker 0 gone');
      for (let i = 0; i < 10; i++) assert.equal((await getOnce(web, '/during')).status, 200);
      const replaced = (await until(async () => {
        const w = (await workers(z))[0];
        return w?.state === 'running' && w.pid !== w0?.pid ? w : null;
      }, 'worker 0 replaced')) as WorkerStat;
      assert.equal(replaced.restarts, 1);
      assert.equal(replaced.last_exit, 'SIGKILL');
      assert.equal(await metric(z, 'zipline_worker_restarts_total{reason="SIGKILL"}'), 1);
      // what the dead worker had counted is carried: the sum does not go down (no counter reset)
      assert.ok((await metric(z, series)) >= counted + 10, 'connections counted before and during');
      await z.waitForLog(/"code":"ZL_WORKER_EXITED"/);

      writeFileSync(
        z.configFile,
        config(
          origin,
          (echo.address() as { port: number }).port,
          uecho.address().port,
          '  - { name: web2, protocol: http, listen: 127.0.0.1:0, upstream: web }',
        ),
      );
      const report = (await (await fetch(`${z.admin}reload`, { method: 'POST' })).json()) as {
        result: string;
        listeners: { added: string[] };
      };
      assert.equal(report.result, 'applied');
      assert.deepEqual(report.listeners.added, ['web2']);
      const web2 = await z.listener('web2');
      for (let i = 0; i < 40; i++) assert.equal((await getOnce(web2, '/two')).status, 200);
      await until(
        () => [...linesByWorker(z, 'web2').values()].reduce((a, n) => a + n, 0) === 40,
        'web2 lines',
      );
      assert.equal(linesByWorker(z, 'web2').size, 2, 'both workers bound the new listener');
    } finally {
      await z.stop();
    }
  });

  test('a second instance on the same fixed ports fails instead of sharing them; a reload onto a taken address is refused', async () => {
    const a = await start();
    let b: ZiplineProcess | null = null;
    try {
      const web = await a.listener('web');
      const tcp = await a.listener('tcp');
      // the same config with a's ports written in: SO_REUSEPORT alone would let b join a's sockets
      const echoPort = (echo.address() as { port: number }).port;
      const fixed = config(origin, echoPort, uecho.address().port)
        .replace(/(name: web, .*listen: )127\.0\.0\.1:0/, `$1${web}`)
        .replace(/(name: tcp, .*listen: )127\.0\.0\.1:0/, `$1${tcp}`);
      assert.match(fixed, new RegExp(`listen: ${web}`));
      const r = await runCli(['run', '-c', writeConfig(fixed)], {}, 10_000);
      assert.equal(r.code, 3);
      assert.match(r.stdout + r.stderr, /ZL_LISTEN_FAILED/);
      assert.match(r.stdout + r.stderr, /another process holds it/);

      // an instance on other ports starts; reloading it onto a's address is refused for that listener
      b = await start();
      writeFileSync(
        b.configFile,
        config(
          origin,
          echoPort,
          uecho.address().port,
          `  - { name: web3, protocol: http, listen: ${web}, upstream: web }`,
        ),
      );
      const report = (await (await fetch(`${b.admin}reload`, { method: 'POST' })).json()) as {
        errors: string[];
      };
      assert.ok(
        report.errors.some((e) => /ZL_LISTEN_FAILED|web3: cannot listen/.test(e) && e.includes(web)),
        JSON.stringify(report.errors),
      );
      for (let i = 0; i < 20; i++) assert.equal((await getOnce(web, '/mine')).status, 200);
      await until(
        () => a?.stdout.filter((l) => l.includes('"/mine"')).length === 20,
        'all 20 requests logged by the first instance',
      );
      assert.equal(linesByWorker(b, 'web3').size, 0, 'the second instance served none of them');
    } finally {
      await b?.stop();
      await a.stop();
    }
  });

  test('SIGTERM drains every worker: the request in flight completes, exit 0, no worker left', async () => {
    const z = await start();
    const pids = (await workers(z)).map((w) => w.pid as number);
    const web = await z.listener('web');
    const inFlight = getOnce(web, '/hold');
    await until(() => held.length === 1, 'origin holds the request');
    z.proc.kill('SIGTERM');
    await z.waitForLog(/"msg":"worker draining before exit"/);
    held.shift()?.();
    assert.deepEqual(await inFlight, { status: 200, body: 'ok /hold' });
    assert.equal(await z.exited, 0);
    for (const pid of pids) assert.equal(alive(pid), false, `worker ${pid} exited`);
  });

  test('a worker never outlives its primary', async () => {
    const z = await start();
    const pids = (await workers(z)).map((w) => w.pid as number);
    z.proc.kill('SIGKILL');
    await z.exited;
    await until(() => pids.every((pid) => !alive(pid)), 'workers gone after their primary');
  });

  test('without the native module, workers > 1 refuse to start: ZL_WORKERS_UNAVAILABLE, exit 3', async () => {
    const echoPort = (echo.address() as { port: number }).port;
    const file = writeConfig(config(origin, echoPort, uecho.address().port));
    const r = await runCli(['run', '-c', file], { ZIPLINE_NO_NATIVE: '1' });
    assert.equal(r.code, 3);
    assert.match(r.stderr, /ZL_WORKERS_UNAVAILABLE/);
  });
});
