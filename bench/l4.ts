/**
 * `npm run bench -- l4`: TCP 64-byte ping-pong (p50/p99 over 20,000 round trips), bulk MB/s
 * (1 GiB one way), UDP 64-byte ping-pong and UDP request/response rate (32 in flight), through
 * zipline and its peers, in the same run.
 *
 * Rules (testing.md): the proxy under test gets CPU 1 alone (`taskset -c 1`), origin and load
 * generator share CPU 0; every peer gets one worker; three repetitions, medians with min–max;
 * ratios within the run; proxy CPU per unit of work from /proc (user+system of the proxy's
 * process tree). Access logging is off for every peer (nginx stream and HAProxy log nothing by
 * default).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildL4bench,
  cpuSeconds,
  freePorts,
  have,
  machineLine,
  nginxModule,
  pinned,
  runPinned,
  startTarget,
  stop,
  waitForPort,
} from './lib/proc.js';
import { fmt, ratio, type Spread, spread } from './lib/stats.js';

const REPS = Number(process.env.BENCH_REPS ?? 3);
const RTTS = Number(process.env.BENCH_RTTS ?? 20_000);
const BULK_BYTES = Number(process.env.BENCH_BULK_BYTES ?? 1024 ** 3);
const UDP_FLOOD = Number(process.env.BENCH_UDP_FLOOD ?? 300_000);
const UDP_WINDOW = 32;

interface Target {
  name: string;
  /** Starts the proxy; returns its pid-holder and the ports it listens on. */
  start(work: string, origin: Origins): Promise<Running>;
}
interface Origins {
  echo: number;
  sink: number;
  udp: number;
}
interface Running {
  tcp: number;
  bulk: number;
  udp: number | null;
  /** Processes whose CPU counts as the proxy's (empty for direct). */
  pids: number[];
  stop(): Promise<void>;
}
interface Result {
  p50: number[];
  p99: number[];
  cpuPerRtt: number[];
  mbs: number[];
  cpuPerGb: number[];
  udpP50: number[];
  udpP99: number[];
  udpCpuPerRtt: number[];
  udpRate: number[];
  udpCpuPerDgram: number[];
}

export async function runL4(root: string): Promise<string> {
  const l4 = buildL4bench(root);
  const work = join(root, 'bench/work');
  const [echo, sink, udp] = await freePorts(3);
  const origins: Origins = { echo: echo as number, sink: sink as number, udp: udp as number };
  const servers = [
    pinned(0, l4, ['echo-server', String(origins.echo)]),
    pinned(0, l4, ['sink-server', String(origins.sink)]),
    pinned(0, l4, ['udp-echo-server', String(origins.udp)]),
  ];
  await waitForPort(origins.echo);
  await waitForPort(origins.sink);
  const targets = makeTargets(root);
  const skipped: string[] = [];
  const results = new Map<string, Result>();
  try {
    for (let rep = 0; rep < REPS; rep++) {
      for (const t of targets) {
        if (t.skip) {
          if (rep === 0) skipped.push(`${t.name}: ${t.skip}`);
          continue;
        }
        const r = results.get(t.name) ?? {
          p50: [],
          p99: [],
          cpuPerRtt: [],
          mbs: [],
          cpuPerGb: [],
          udpP50: [],
          udpP99: [],
          udpCpuPerRtt: [],
          udpRate: [],
          udpCpuPerDgram: [],
        };
        const run = await startTarget(t, () => t.start(work, origins), skipped);
        if (run === null) {
          results.delete(t.name);
          continue;
        }
        results.set(t.name, r);
        try {
          measure(l4, run, r);
        } finally {
          await run.stop();
        }
        process.stderr.write(
          `l4 rep ${rep + 1}/${REPS} ${t.name}: p50 ${r.p50.at(-1)?.toFixed(1)} µs, ${r.mbs.at(-1)?.toFixed(0)} MB/s\n`,
        );
      }
    }
  } finally {
    for (const s of servers) await stop(s);
  }
  return report(results, skipped);
}

function measure(l4: string, run: Running, r: Result): void {
  const totalRtts = RTTS * 1.1; // the tool runs 10 % warm-up round trips first
  const cpu = (): number => run.pids.reduce((n, pid) => n + cpuSeconds(pid), 0);
  const measured = run.pids.length > 0;
  let cpu0 = cpu();
  const pp = JSON.parse(runPinned(0, l4, ['pingpong', '127.0.0.1', String(run.tcp), String(RTTS), '64'])) as {
    p50_us: number;
    p99_us: number;
  };
  r.p50.push(pp.p50_us);
  r.p99.push(pp.p99_us);
  if (measured) r.cpuPerRtt.push(((cpu() - cpu0) / totalRtts) * 1e6);
  cpu0 = cpu();
  const bulk = JSON.parse(runPinned(0, l4, ['bulk', '127.0.0.1', String(run.bulk), String(BULK_BYTES)])) as {
    mb_s: number;
    received: number;
  };
  if (bulk.received !== BULK_BYTES) throw new Error(`bulk lost bytes: ${bulk.received} of ${BULK_BYTES}`);
  r.mbs.push(bulk.mb_s);
  if (measured) r.cpuPerGb.push((cpu() - cpu0) / (BULK_BYTES / 1e9));
  if (run.udp !== null) {
    cpu0 = cpu();
    const u = JSON.parse(
      runPinned(0, l4, ['udp-pingpong', '127.0.0.1', String(run.udp), String(RTTS), '64']),
    ) as {
      p50_us: number;
      p99_us: number;
    };
    r.udpP50.push(u.p50_us);
    r.udpP99.push(u.p99_us);
    if (measured) r.udpCpuPerRtt.push(((cpu() - cpu0) / totalRtts) * 1e6);
    cpu0 = cpu();
    const f = JSON.parse(
      runPinned(0, l4, [
        'udp-flood',
        '127.0.0.1',
        String(run.udp),
        String(UDP_FLOOD),
        '64',
        String(UDP_WINDOW),
      ]),
    ) as { received: number; dgrams_s: number };
    if (f.received === UDP_FLOOD) {
      r.udpRate.push(f.dgrams_s);
      if (measured) r.udpCpuPerDgram.push(((cpu() - cpu0) / UDP_FLOOD) * 1e6);
    }
  }
}

type TargetDef = Target & { skip?: string | undefined };

function ziplineTarget(root: string, name: string, native: 'auto' | 'off'): TargetDef {
  return {
    name,
    async start(work, o) {
      const [tcp, bulk, udp, admin] = (await freePorts(4)) as [number, number, number, number];
      const cfg = join(work, `${name}-l4.yaml`);
      writeFileSync(
        cfg,
        `admin: { listen: 127.0.0.1:${admin} }
log: { level: warn, access: off }
upstreams:
  echo: { servers: [127.0.0.1:${o.echo}] }
  sink: { servers: [127.0.0.1:${o.sink}] }
  udp: { servers: [127.0.0.1:${o.udp}] }
listeners:
  - { name: tcp, protocol: tcp, listen: 127.0.0.1:${tcp}, upstream: echo, native: ${native} }
  - { name: bulk, protocol: tcp, listen: 127.0.0.1:${bulk}, upstream: sink, native: ${native} }
  - { name: udp, protocol: udp, listen: 127.0.0.1:${udp}, upstream: udp, native: ${native} }
`,
      );
      const p = pinned(1, process.execPath, [join(root, 'bin/zipline.js'), 'run', '-c', cfg]);
      await waitForPort(tcp);
      return { tcp, bulk, udp, pids: [p.pid ?? 0], stop: () => stop(p) };
    },
  };
}

function makeTargets(root: string): TargetDef[] {
  const node = process.execPath;
  return [
    {
      name: 'direct',
      async start(_w, o) {
        return { tcp: o.echo, bulk: o.sink, udp: o.udp, pids: [], stop: async () => {} };
      },
    },
    ziplineTarget(root, 'zipline', 'auto'),
    ziplineTarget(root, 'zipline-js', 'off'),
    {
      name: 'nginx',
      skip:
        nginxModule('stream') === null
          ? 'nginx or its stream module not installed (apt-get install nginx-light libnginx-mod-stream)'
          : undefined,
      async start(work, o) {
        const [tcp, bulk, udp] = (await freePorts(3)) as [number, number, number];
        const conf = join(work, 'nginx-l4.conf');
        writeFileSync(
          conf,
          `${nginxModule('stream')}
worker_processes 1;
daemon off;
pid ${work}/nginx.pid;
error_log ${work}/nginx-error.log;
events { worker_connections 4096; }
stream {
  server { listen 127.0.0.1:${tcp}; proxy_pass 127.0.0.1:${o.echo}; tcp_nodelay on; }
  server { listen 127.0.0.1:${bulk}; proxy_pass 127.0.0.1:${o.sink}; proxy_half_close on; }
  server { listen 127.0.0.1:${udp} udp; proxy_pass 127.0.0.1:${o.udp}; proxy_responses 1; }
}
`,
        );
        const p = pinned(1, 'nginx', ['-c', conf, '-e', `${work}/nginx-error.log`]);
        await waitForPort(tcp);
        return { tcp, bulk, udp, pids: [p.pid ?? 0], stop: () => stop(p) };
      },
    },
    {
      name: 'haproxy',
      skip: have('haproxy') ? undefined : 'haproxy not installed (apt-get install haproxy)',
      async start(work, o) {
        const [tcp, bulk] = (await freePorts(2)) as [number, number];
        const conf = join(work, 'haproxy-l4.cfg');
        writeFileSync(
          conf,
          `global
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 1m
  timeout server 1m
listen echo
  bind 127.0.0.1:${tcp}
  server s1 127.0.0.1:${o.echo}
listen sink
  bind 127.0.0.1:${bulk}
  server s1 127.0.0.1:${o.sink}
`,
        );
        const p = pinned(1, 'haproxy', ['-db', '-f', conf]);
        await waitForPort(tcp);
        return { tcp, bulk, udp: null, pids: [p.pid ?? 0], stop: () => stop(p) };
      },
    },
    {
      name: 'node-pipe',
      async start(_w, o) {
        const [tcp, bulk, udp] = (await freePorts(3)) as [number, number, number];
        const script = join(root, 'dist/bench/peers/node-pipe.js');
        // two processes (echo and bulk) would double the baseline's CPU; one process, two listeners
        const p = pinned(1, node, [script, String(tcp), String(o.echo), String(udp), String(o.udp)]);
        const b = pinned(1, node, [script, String(bulk), String(o.sink)]);
        await waitForPort(tcp);
        await waitForPort(bulk);
        return {
          tcp,
          bulk,
          udp,
          pids: [p.pid ?? 0, b.pid ?? 0],
          stop: async () => {
            await stop(p);
            await stop(b);
          },
        };
      },
    },
  ];
}

function report(results: Map<string, Result>, skipped: string[]): string {
  const get = (name: string, k: keyof Result): Spread | undefined => {
    const v = results.get(name)?.[k];
    return v && v.length > 0 ? spread(v) : undefined;
  };
  const direct50 = get('direct', 'p50')?.median ?? 0;
  const directUdp50 = get('direct', 'udpP50')?.median ?? 0;
  const added = (name: string, k: 'p50' | 'udpP50'): number | undefined => {
    const s = get(name, k);
    return s === undefined ? undefined : s.median - (k === 'p50' ? direct50 : directUdp50);
  };
  const names = [...results.keys()];
  const lines: string[] = [];
  lines.push(`## L4 (${new Date().toISOString().slice(0, 10)})`, '', `Machine: ${machineLine()}.`);
  lines.push(
    `Proxy pinned to CPU 1, origin (C) and load generator (C) on CPU 0. ${REPS} repetitions; medians (min–max).`,
  );
  lines.push(
    `Ping-pong: ${RTTS} round trips of 64 bytes on one connection. Bulk: ${BULK_BYTES / 1024 ** 3} GiB one way.`,
    '',
  );
  lines.push('### TCP 64-byte round trip', '');
  lines.push(
    '| target | p50 µs | p99 µs | added p50 µs | proxy CPU µs / round trip | added p50 ÷ nginx | CPU ÷ nginx |',
  );
  lines.push('|---|---|---|---|---|---|---|');
  const ngAdded = added('nginx', 'p50');
  const ngCpu = get('nginx', 'cpuPerRtt')?.median;
  for (const n of names) {
    const a = added(n, 'p50');
    lines.push(
      `| ${n} | ${fmt(get(n, 'p50'))} | ${fmt(get(n, 'p99'))} | ${n === 'direct' ? '—' : (a?.toFixed(1) ?? '—')} | ${fmt(get(n, 'cpuPerRtt'))} | ${n === 'direct' ? '—' : ratio(a, ngAdded)} | ${ratio(get(n, 'cpuPerRtt')?.median, ngCpu)} |`,
    );
  }
  lines.push('', '### TCP bulk, one connection', '');
  lines.push('| target | MB/s | proxy CPU-s / GB | MB/s ÷ nginx |', '|---|---|---|---|');
  const ngMbs = get('nginx', 'mbs')?.median;
  for (const n of names) {
    lines.push(
      `| ${n} | ${fmt(get(n, 'mbs'), 0)} | ${fmt(get(n, 'cpuPerGb'), 2)} | ${ratio(get(n, 'mbs')?.median, ngMbs)} |`,
    );
  }
  lines.push('', '### UDP 64-byte round trip (one session)', '');
  lines.push(
    '| target | p50 µs | p99 µs | added p50 µs | proxy CPU µs / round trip | added p50 ÷ nginx | CPU ÷ nginx |',
    '|---|---|---|---|---|---|---|',
  );
  const ngUdpCpu = get('nginx', 'udpCpuPerRtt')?.median;
  const ngUdp = added('nginx', 'udpP50');
  for (const n of names) {
    if (get(n, 'udpP50') === undefined) continue;
    const a = added(n, 'udpP50');
    lines.push(
      `| ${n} | ${fmt(get(n, 'udpP50'))} | ${fmt(get(n, 'udpP99'))} | ${n === 'direct' ? '—' : (a?.toFixed(1) ?? '—')} | ${fmt(get(n, 'udpCpuPerRtt'))} | ${n === 'direct' ? '—' : ratio(a, ngUdp)} | ${ratio(get(n, 'udpCpuPerRtt')?.median, ngUdpCpu)} |`,
    );
  }
  lines.push(
    '',
    `### UDP request/response rate (${UDP_FLOOD} datagrams, ${UDP_WINDOW} in flight, one session)`,
    '',
  );
  lines.push('| target | round trips/s | proxy CPU µs / round trip | rate ÷ nginx |', '|---|---|---|---|');
  const ngRate = get('nginx', 'udpRate')?.median;
  for (const n of names) {
    if (get(n, 'udpRate') === undefined) continue;
    lines.push(
      `| ${n} | ${fmt(get(n, 'udpRate'), 0)} | ${fmt(get(n, 'udpCpuPerDgram'), 2)} | ${ratio(get(n, 'udpRate')?.median, ngRate)} |`,
    );
  }
  if (skipped.length > 0) lines.push('', `Skipped: ${skipped.join('; ')}.`);
  lines.push('');
  return lines.join('\n');
}
