/**
 * `npm run bench -- http`: zipline as an HTTP/1.1 reverse proxy beside nginx, HAProxy, Caddy and
 * node-http-proxy, in the same run (testing.md). Origin: nginx (`return 200 "ok"`, and a 1 MiB
 * file) on CPU 0 with `wrk` as the load generator; the proxy alone on CPU 1, one worker each.
 *
 * Scenarios, each a `wrk` run of `BENCH_SECONDS` (default 5):
 * - keep-alive, 2-byte body, 50 connections: req/s and proxy CPU µs per request;
 * - one connection: latency p50/p99 (added = proxied − direct origin);
 * - 1 MiB bodies, 8 connections: MB/s and proxy CPU-s per GB;
 * - a new connection per request (`Connection: close`), 50 connections: proxy CPU µs per request;
 * - 1,000 concurrent keep-alive connections: errors (socket errors + non-2xx), p99, peak RSS (and,
 *   for scale, the peak right after start-up and the file-backed part: the binary's own pages).
 * Three repetitions; medians with min–max; access logs off everywhere; upstream keep-alive on
 * for every peer that has it.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  cpuSeconds,
  freePorts,
  have,
  machineLine,
  pinned,
  startTarget,
  stop,
  waitForPort,
} from './lib/proc.js';
import { fmt, ratio, spread } from './lib/stats.js';

const REPS = Number(process.env.BENCH_REPS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);

interface Running {
  port: number;
  pids: number[];
  stop(): Promise<void>;
}
interface Target {
  name: string;
  skip?: string | undefined;
  start(work: string, origin: number): Promise<Running>;
}
type Metric =
  | 'rps'
  | 'cpuPerReq'
  | 'p50'
  | 'p99'
  | 'mbs'
  | 'cpuPerGb'
  | 'closeCpuPerReq'
  | 'closeRps'
  | 'c1kErrors'
  | 'c1kP99'
  | 'c1kRss'
  | 'startRss'
  | 'fileRss';
type Result = Record<Metric, number[]>;

interface Wrk {
  rps: number;
  requests: number;
  p50us: number;
  p99us: number;
  errors: number;
  bytesPerSec: number;
}

function wrk(args: string[]): Wrk {
  const bin = have('taskset') ? 'taskset' : 'wrk';
  const argv = have('taskset') ? ['-c', '0', 'wrk', ...args] : args;
  const out = execFileSync(bin, argv, { encoding: 'utf8', timeout: (SECONDS + 60) * 1000 });
  const num = (re: RegExp): number => Number(re.exec(out)?.[1] ?? Number.NaN);
  const unit = (text: string | undefined): number => {
    const m = /^([\d.]+)(us|ms|s)$/.exec(text ?? '');
    if (m === null) return Number.NaN;
    return Number(m[1]) * (m[2] === 'us' ? 1 : m[2] === 'ms' ? 1000 : 1e6);
  };
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = sock === null ? 0 : sock.slice(1).reduce((a, x) => a + Number(x), 0);
  const non2xx = num(/Non-2xx or 3xx responses: (\d+)/);
  const transfer = /Transfer\/sec:\s+([\d.]+)(B|KB|MB|GB)/.exec(out);
  const scale: Record<string, number> = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 };
  return {
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    requests: num(/(\d+) requests in/),
    p50us: unit(/\n\s+50%\s+(\S+)/.exec(out)?.[1]),
    p99us: unit(/\n\s+99%\s+(\S+)/.exec(out)?.[1]),
    errors: socketErrors + (Number.isNaN(non2xx) ? 0 : non2xx),
    bytesPerSec: transfer === null ? Number.NaN : Number(transfer[1]) * (scale[transfer[2] as string] ?? 1),
  };
}

/** `field` of /proc/PID/status (kB), summed over the processes and their children, in MiB. */
function rssOf(pids: number[], field = 'VmHWM'): number {
  const re = new RegExp(`${field}:\\s+(\\d+)`);
  let kb = 0;
  for (const pid of pids) {
    const visit = (p: number): void => {
      try {
        kb += Number(re.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
        for (const c of readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/)) {
          if (c) visit(Number(c));
        }
      } catch {
        // gone
      }
    };
    visit(pid);
  }
  return kb / 1024;
}

async function measure(run: Running, r: Result): Promise<void> {
  const url = (path: string): string => `http://127.0.0.1:${run.port}${path}`;
  const cpu = (): number => run.pids.reduce((n, pid) => n + cpuSeconds(pid), 0);
  const measured = run.pids.length > 0;
  // the peak so far is start-up's: config, modules, listeners, before any request
  if (measured) r.startRss.push(rssOf(run.pids));
  try {
    wrk(['-t1', '-c50', '-d1s', url('/ok')]); // warm-up (JIT, pools)
    let c0 = cpu();
    const ka = wrk(['-t1', '-c50', `-d${SECONDS}s`, url('/ok')]);
    r.rps.push(ka.rps);
    if (measured) r.cpuPerReq.push(((cpu() - c0) / ka.requests) * 1e6);
    // one connection's own warm-up: the JIT meets paths the 50-connection run did not take
    // (one socket per turn); without it the first seconds' recompiles set the p99
    wrk(['-t1', '-c1', '-d1s', url('/ok')]);
    const one = wrk(['-t1', '-c1', `-d${SECONDS}s`, '--latency', url('/ok')]);
    r.p50.push(one.p50us);
    r.p99.push(one.p99us);
    c0 = cpu();
    const big = wrk(['-t1', '-c8', `-d${SECONDS}s`, url('/1m')]);
    const mbs = big.bytesPerSec / 1e6;
    r.mbs.push(mbs);
    if (measured) r.cpuPerGb.push((cpu() - c0) / ((big.bytesPerSec * SECONDS) / 1e9));
    c0 = cpu();
    const close = wrk(['-t1', '-c50', `-d${SECONDS}s`, '-H', 'Connection: close', url('/ok')]);
    r.closeRps.push(close.rps);
    if (measured) r.closeCpuPerReq.push(((cpu() - c0) / close.requests) * 1e6);
    const many = wrk(['-t1', '-c1000', `-d${SECONDS}s`, '--latency', '--timeout', '2s', url('/ok')]);
    r.c1kErrors.push(many.errors);
    r.c1kP99.push(many.p99us);
    if (measured) {
      r.c1kRss.push(rssOf(run.pids));
      r.fileRss.push(rssOf(run.pids, 'RssFile'));
    }
  } finally {
    await run.stop();
  }
}

export async function runHttp(root: string): Promise<string> {
  if (!have('wrk')) throw new Error('wrk is required: apt-get install wrk');
  if (!have('nginx')) throw new Error('nginx is required as the origin: apt-get install nginx-light');
  const work = join(root, 'bench/work');
  mkdirSync(work, { recursive: true });
  writeFileSync(join(work, '1m.bin'), Buffer.alloc(1024 * 1024, 'z'));
  const [originPort] = (await freePorts(1)) as [number];
  const originConf = join(work, 'nginx-origin.conf');
  writeFileSync(
    originConf,
    `worker_processes 1;
daemon off;
pid ${work}/nginx-origin.pid;
error_log ${work}/nginx-origin-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:${originPort} reuseport backlog=4096;
    location = /ok { return 200 "ok"; }
    location = /1m { alias ${work}/1m.bin; }
  }
}
`,
  );
  const origin = pinned(0, 'nginx', ['-c', originConf, '-e', `${work}/nginx-origin-error.log`]);
  await waitForPort(originPort);
  const targets = makeTargets(root);
  const results = new Map<string, Result>();
  const skipped: string[] = [];
  try {
    for (let rep = 0; rep < REPS; rep++) {
      for (const t of targets) {
        if (t.skip !== undefined) {
          if (rep === 0) skipped.push(`${t.name}: ${t.skip}`);
          continue;
        }
        const r =
          results.get(t.name) ??
          (Object.fromEntries(
            [
              'rps',
              'cpuPerReq',
              'p50',
              'p99',
              'mbs',
              'cpuPerGb',
              'closeCpuPerReq',
              'closeRps',
              'c1kErrors',
              'c1kP99',
              'c1kRss',
              'startRss',
              'fileRss',
            ].map((k) => [k, []]),
          ) as unknown as Result);
        const run = await startTarget(t, () => t.start(work, originPort), skipped);
        if (run === null) {
          results.delete(t.name);
          continue;
        }
        results.set(t.name, r);
        await measure(run, r);
        process.stderr.write(
          `http rep ${rep + 1}/${REPS} ${t.name}: ${r.rps.at(-1)?.toFixed(0)} req/s, ${r.cpuPerReq.at(-1)?.toFixed(1) ?? '—'} µs/req, p50 ${r.p50.at(-1)?.toFixed(0)} µs, ${r.mbs.at(-1)?.toFixed(0)} MB/s\n`,
        );
      }
    }
  } finally {
    await stop(origin);
  }
  return report(results, skipped);
}

function report(results: Map<string, Result>, skipped: string[]): string {
  const med = (name: string, m: Metric): number | undefined => {
    const v = results.get(name)?.[m];
    return v === undefined || v.length === 0 ? undefined : spread(v).median;
  };
  const s = (name: string, m: Metric) => {
    const v = results.get(name)?.[m];
    return v === undefined || v.length === 0 ? undefined : spread(v);
  };
  const direct50 = med('direct', 'p50');
  const direct99 = med('direct', 'p99');
  const lines = [
    `${machineLine()}; ${REPS} repetitions of ${SECONDS} s per scenario; medians (min–max).`,
    'Origin nginx and wrk on CPU 0, the proxy alone on CPU 1, one worker each, access logs off.',
    '',
    '### Keep-alive, 2-byte body, 50 connections; one-connection latency',
    '',
    '| target | req/s | proxy CPU µs / req | p50 µs (1 conn) | p99 µs | added p50 | added p99 | CPU ÷ nginx | req/s ÷ nginx |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  const ngCpu = med('nginx', 'cpuPerReq');
  const ngRps = med('nginx', 'rps');
  for (const name of results.keys()) {
    const p50 = med(name, 'p50');
    const p99 = med(name, 'p99');
    lines.push(
      `| ${name} | ${fmt(s(name, 'rps'), 0)} | ${fmt(s(name, 'cpuPerReq'))} | ${fmt(s(name, 'p50'), 0)} | ${fmt(s(name, 'p99'), 0)} | ${name === 'direct' || p50 === undefined || direct50 === undefined ? '—' : (p50 - direct50).toFixed(0)} | ${name === 'direct' || p99 === undefined || direct99 === undefined ? '—' : (p99 - direct99).toFixed(0)} | ${ratio(med(name, 'cpuPerReq'), ngCpu)} | ${ratio(med(name, 'rps'), ngRps)} |`,
    );
  }
  lines.push(
    '',
    '### 1 MiB bodies (8 connections) and a new connection per request (50 connections)',
    '',
    '| target | MB/s | proxy CPU-s / GB | MB/s ÷ nginx | close: req/s | close: proxy CPU µs / req |',
    '|---|---|---|---|---|---|',
  );
  const ngMbs = med('nginx', 'mbs');
  for (const name of results.keys()) {
    lines.push(
      `| ${name} | ${fmt(s(name, 'mbs'), 0)} | ${fmt(s(name, 'cpuPerGb'), 2)} | ${ratio(med(name, 'mbs'), ngMbs)} | ${fmt(s(name, 'closeRps'), 0)} | ${fmt(s(name, 'closeCpuPerReq'))} |`,
    );
  }
  lines.push(
    '',
    '### 1,000 concurrent keep-alive connections',
    '',
    '| target | errors (socket + non-2xx) | p99 µs | proxy peak RSS MiB | peak RSS after start-up, no load | file-backed RSS at the end (binary, libraries) |',
    '|---|---|---|---|---|---|',
  );
  for (const name of results.keys()) {
    lines.push(
      `| ${name} | ${fmt(s(name, 'c1kErrors'), 0)} | ${fmt(s(name, 'c1kP99'), 0)} | ${fmt(s(name, 'c1kRss'), 0)} | ${fmt(s(name, 'startRss'), 0)} | ${fmt(s(name, 'fileRss'), 0)} |`,
    );
  }
  if (skipped.length > 0) lines.push('', `Skipped: ${skipped.join('; ')}.`);
  return lines.join('\n');
}

function makeTargets(root: string): Target[] {
  return [
    {
      name: 'direct',
      async start(_w, origin) {
        return { port: origin, pids: [], stop: async () => {} };
      },
    },
    {
      name: 'zipline',
      async start(work, origin) {
        const [port, admin] = (await freePorts(2)) as [number, number];
        const cfg = join(work, 'zipline-http.yaml');
        writeFileSync(
          cfg,
          `admin: { listen: 127.0.0.1:${admin} }
log: { level: warn, access: off }
upstreams:
  origin:
    servers: [127.0.0.1:${origin}]
    keepalive: { max_idle: 1024, max_requests: 1000000 }
    circuit_breaker: { max_connections: 100000 }
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:${port}, upstream: origin }
`,
        );
        const p = pinned(1, process.execPath, [join(root, 'bin/zipline.js'), 'run', '-c', cfg]);
        await waitForPort(port);
        return { port, pids: [p.pid ?? 0], stop: () => stop(p) };
      },
    },
    {
      name: 'nginx',
      async start(work, origin) {
        const [port] = (await freePorts(1)) as [number];
        const conf = join(work, 'nginx-http.conf');
        writeFileSync(
          conf,
          `worker_processes 1;
daemon off;
pid ${work}/nginx-http.pid;
error_log ${work}/nginx-http-error.log;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream origin { server 127.0.0.1:${origin}; keepalive 1024; }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_buffering on;
    }
  }
}
`,
        );
        const p = pinned(1, 'nginx', ['-c', conf, '-e', `${work}/nginx-http-error.log`]);
        await waitForPort(port);
        return { port, pids: [p.pid ?? 0], stop: () => stop(p) };
      },
    },
    {
      name: 'haproxy',
      skip: have('haproxy') ? undefined : 'haproxy not installed (apt-get install haproxy)',
      async start(work, origin) {
        const [port] = (await freePorts(1)) as [number];
        const conf = join(work, 'haproxy-http.cfg');
        writeFileSync(
          conf,
          `global
  nbthread 1
  maxconn 8000
defaults
  mode http
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 1m
  timeout server 1m
  timeout http-keep-alive 1m
listen web
  bind 127.0.0.1:${port}
  server s1 127.0.0.1:${origin}
`,
        );
        const p = pinned(1, 'haproxy', ['-f', conf, '-db']);
        await waitForPort(port);
        return { port, pids: [p.pid ?? 0], stop: () => stop(p) };
      },
    },
    {
      name: 'caddy',
      skip: have('caddy') ? undefined : 'caddy not installed (apt-get install caddy)',
      async start(work, origin) {
        const [port, admin] = (await freePorts(2)) as [number, number];
        const conf = join(work, 'Caddyfile');
        writeFileSync(
          conf,
          `{
  admin 127.0.0.1:${admin}
  auto_https off
}
http://127.0.0.1:${port} {
  reverse_proxy 127.0.0.1:${origin}
}
`,
        );
        const env = {
          ...process.env,
          GOMAXPROCS: '1',
          HOME: work,
          XDG_DATA_HOME: work,
          XDG_CONFIG_HOME: work,
        };
        const p = pinned(1, 'caddy', ['run', '--config', conf, '--adapter', 'caddyfile'], env);
        await waitForPort(port);
        return { port, pids: [p.pid ?? 0], stop: () => stop(p) };
      },
    },
    {
      name: 'node-http-proxy',
      async start(_work, origin) {
        const [port] = (await freePorts(1)) as [number];
        const p = pinned(1, process.execPath, [
          join(root, 'dist/bench/peers/node-http-proxy.js'),
          String(port),
          String(origin),
        ]);
        await waitForPort(port);
        return { port, pids: [p.pid ?? 0], stop: () => stop(p) };
      },
    },
  ];
}
