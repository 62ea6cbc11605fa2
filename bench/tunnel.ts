/**
 * `npm run bench -- tunnel`: the tunnel beside its peers, both halves of each tunnel on CPU 1,
 * origins and load generator on CPU 0 (testing.md). Per target: 64-byte round trip added p50/p99
 * (20,000 round trips) and bulk MB/s (1 GiB, one way) with the CPU both halves spent.
 *
 * Targets: direct; zipline with TLS 1.3 ChaCha20-Poly1305 (the default) and with AES-256-GCM;
 * stunnel (TLS 1.3 AES-256-GCM, client and server services in one process); shadowsocks-libev
 * (ss-server + ss-tunnel) with chacha20-ietf-poly1305 and aes-256-gcm. Peers not installed are
 * skipped with a note. Then two zipline-only scenarios: 100 concurrent streams with one reader
 * stalled (the other 99's throughput against 99 alone, and the processes' memory), and zstd on
 * JSON-like and on random data (MB/s and ratio against `compression: none`).
 * BENCH_ONLY=substring limits the targets; BENCH_SCENARIOS=0 skips the two scenarios.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { relayTls } from '../src/tunnel/tls.js';
import {
  buildL4bench,
  cpuSeconds,
  freePorts,
  have,
  machineLine,
  pinned,
  runPinned,
  startTarget,
  stop,
  waitForPort,
  waitReady,
} from './lib/proc.js';
import { fmt, ratio, type Spread, spread } from './lib/stats.js';

const REPS = Number(process.env.BENCH_REPS ?? 3);
const RTTS = Number(process.env.BENCH_RTTS ?? 20_000);
const BULK_BYTES = Number(process.env.BENCH_BULK_BYTES ?? 1024 ** 3);
const TOKEN = randomBytes(24).toString('hex');

interface Running {
  echo: number;
  sink: number;
  pids: number[];
  stop(): Promise<void>;
}
interface Target {
  name: string;
  skip?: string;
  start(work: string, o: { echo: number; sink: number }): Promise<Running>;
}
interface Result {
  p50: number[];
  p99: number[];
  mbs: number[];
  cpuPerGb: number[];
}

/** A zipline relay and agent (two processes on CPU 1) with forwards to the echo and sink origins. */
/** Agent and relay in one zipline process (as stunnel runs both services in one), on CPU 1. */
async function startZiplineOne(
  root: string,
  work: string,
  o: { echo: number; sink: number },
  ciphers: string,
): Promise<Running> {
  const [relay, admin, echo, sink] = (await freePorts(4)) as [number, number, number, number];
  const stateDir = join(work, 'tunnel-state');
  const { fingerprint } = await relayTls('auto', stateDir, ciphers);
  const cfg = join(work, 'one-process.yaml');
  writeFileSync(
    cfg,
    `admin: { listen: 127.0.0.1:${admin} }
log: { level: warn, access: off }
tunnel:
${relaySection(relay, stateDir, ciphers)}${agentSection(relay, fingerprint, o, echo, sink)}`,
  );
  const p = pinned(1, process.execPath, [join(root, 'bin/zipline.js'), 'run', '-c', cfg]);
  await waitForPort(echo);
  await waitReady(admin);
  return { echo, sink, pids: [p.pid ?? 0], stop: () => stop(p) };
}

/** The `tunnel.relay` block the bench runs (TLS auto, loopback destinations only). */
function relaySection(relay: number, stateDir: string, ciphers: string): string {
  return `  relay:
    listen: 127.0.0.1:${relay}
    tls: auto
    state_dir: ${stateDir}
    ciphers: ${ciphers}
    tokens: ["${TOKEN}"]
    allow: ["127.0.0.1:*"]
`;
}

/** The `tunnel.agent` block: forwards echo and sink ports through the relay. */
function agentSection(
  relay: number,
  fingerprint: string,
  o: { echo: number; sink: number },
  echo: number,
  sink: number,
  compression = 'none',
): string {
  return `  agent:
    relays: [{ address: 127.0.0.1:${relay}, fingerprint: "${fingerprint}" }]
    token: "${TOKEN}"
    via: ""
    compression: ${compression}
    forwards:
      - { listen: 127.0.0.1:${echo}, to: 127.0.0.1:${o.echo} }
      - { listen: 127.0.0.1:${sink}, to: 127.0.0.1:${o.sink} }
`;
}

async function startZipline(
  root: string,
  work: string,
  o: { echo: number; sink: number },
  name: string,
  ciphers: string,
  compression = 'none',
  extraForwards = '',
): Promise<Running & { agentAdmin: number }> {
  const [relay, ra, aa, echo, sink] = (await freePorts(5)) as [number, number, number, number, number];
  const stateDir = join(work, 'tunnel-state');
  const rcfg = join(work, `${name}-relay.yaml`);
  const acfg = join(work, `${name}-agent.yaml`);
  writeFileSync(
    rcfg,
    `admin: { listen: 127.0.0.1:${ra} }
log: { level: warn, access: off }
tunnel:
${relaySection(relay, stateDir, ciphers)}`,
  );
  const env = { ...process.env };
  const rp = pinned(1, process.execPath, [join(root, 'bin/zipline.js'), 'run', '-c', rcfg], env);
  await waitForPort(relay);
  const fp = (
    (await (await fetch(`http://127.0.0.1:${ra}/stats`)).json()) as {
      tunnel: { relay: { tls: { fingerprint: string } } };
    }
  ).tunnel.relay.tls.fingerprint;
  writeFileSync(
    acfg,
    `admin: { listen: 127.0.0.1:${aa} }
log: { level: warn, access: off }
tunnel:
${agentSection(relay, fp, o, echo, sink, compression)}${extraForwards}`,
  );
  const ap = pinned(1, process.execPath, [join(root, 'bin/zipline.js'), 'run', '-c', acfg], env);
  await waitForPort(echo);
  await waitReady(aa);
  return {
    echo,
    sink,
    agentAdmin: aa,
    pids: [rp.pid ?? 0, ap.pid ?? 0],
    stop: async () => {
      await stop(ap);
      await stop(rp);
    },
  };
}

function makeTargets(root: string): Target[] {
  const cert = join(root, 'test/fixtures/tls/a.crt');
  const key = join(root, 'test/fixtures/tls/a.key');
  const ss = (cipher: string): Target => ({
    name: `shadowsocks-libev ${cipher}`,
    ...(have('ss-server') && have('ss-tunnel')
      ? {}
      : { skip: 'ss-server/ss-tunnel not installed (apt-get install shadowsocks-libev)' }),
    async start(_work, o) {
      const [server, echo, sink] = (await freePorts(3)) as [number, number, number];
      const common = ['-k', TOKEN, '-m', cipher];
      const s = pinned(1, 'ss-server', ['-s', '127.0.0.1', '-p', String(server), ...common]);
      await waitForPort(server);
      const t1 = pinned(1, 'ss-tunnel', [
        '-s',
        '127.0.0.1',
        '-p',
        String(server),
        '-l',
        String(echo),
        '-L',
        `127.0.0.1:${o.echo}`,
        ...common,
      ]);
      const t2 = pinned(1, 'ss-tunnel', [
        '-s',
        '127.0.0.1',
        '-p',
        String(server),
        '-l',
        String(sink),
        '-L',
        `127.0.0.1:${o.sink}`,
        ...common,
      ]);
      await waitForPort(echo);
      await waitForPort(sink);
      return {
        echo,
        sink,
        pids: [s.pid ?? 0, t1.pid ?? 0, t2.pid ?? 0],
        stop: async () => {
          await stop(t1);
          await stop(t2);
          await stop(s);
        },
      };
    },
  });
  return [
    {
      name: 'direct',
      async start(_w, o) {
        return { echo: o.echo, sink: o.sink, pids: [], stop: async () => {} };
      },
    },
    {
      name: 'zipline TLS 1.3 CHACHA20-POLY1305',
      start: (w, o) => startZipline(root, w, o, 'chacha', 'TLS_CHACHA20_POLY1305_SHA256'),
    },
    {
      name: 'zipline TLS 1.3 AES-256-GCM',
      start: (w, o) => startZipline(root, w, o, 'aes', 'TLS_AES_256_GCM_SHA384'),
    },
    {
      name: 'zipline one process CHACHA20-POLY1305',
      start: (w, o) => startZiplineOne(root, w, o, 'TLS_CHACHA20_POLY1305_SHA256'),
    },
    {
      name: 'stunnel TLS 1.3 AES-256-GCM',
      ...(have('stunnel') ? {} : { skip: 'stunnel not installed (apt-get install stunnel4)' }),
      async start(work, o) {
        const [s1, s2, echo, sink] = (await freePorts(4)) as [number, number, number, number];
        const conf = join(work, 'stunnel.conf');
        const svc = (n: string, acc: number, conn: number, client: boolean): string =>
          `[${n}]\n${client ? 'client = yes\n' : `cert = ${cert}\nkey = ${key}\n`}accept = 127.0.0.1:${acc}\nconnect = 127.0.0.1:${conn}\nsslVersionMin = TLSv1.3\nciphersuites = TLS_AES_256_GCM_SHA384\n`;
        writeFileSync(
          conf,
          `foreground = yes\npid =\ndebug = 3\n${svc('echo-c', echo, s1, true)}${svc('echo-s', s1, o.echo, false)}${svc('sink-c', sink, s2, true)}${svc('sink-s', s2, o.sink, false)}`,
        );
        const p = pinned(1, 'stunnel', [conf]);
        await waitForPort(echo);
        await waitForPort(sink);
        return { echo, sink, pids: [p.pid ?? 0], stop: () => stop(p) };
      },
    },
    ss('chacha20-ietf-poly1305'),
    ss('aes-256-gcm'),
  ];
}

function measure(l4: string, run: Running, r: Result): void {
  const cpu = (): number => run.pids.reduce((n, pid) => n + cpuSeconds(pid), 0);
  const pp = JSON.parse(
    runPinned(0, l4, ['pingpong', '127.0.0.1', String(run.echo), String(RTTS), '64']),
  ) as { p50_us: number; p99_us: number };
  r.p50.push(pp.p50_us);
  r.p99.push(pp.p99_us);
  const cpu0 = cpu();
  const bulk = JSON.parse(runPinned(0, l4, ['bulkn', '127.0.0.1', String(run.sink), String(BULK_BYTES)])) as {
    mb_s: number;
    received: number;
  };
  if (bulk.received !== BULK_BYTES) throw new Error(`bulk lost bytes: ${bulk.received} of ${BULK_BYTES}`);
  r.mbs.push(bulk.mb_s);
  if (run.pids.length > 0) r.cpuPerGb.push((cpu() - cpu0) / (BULK_BYTES / 1e9));
}

/** A source: every connection gets endless bytes (until it closes). */
async function startSource(): Promise<{ port: number; close(): void }> {
  const block = randomBytes(64 * 1024);
  const server = createServer((s) => {
    s.on('error', () => {});
    const pump = (): void => {
      while (!s.destroyed && s.write(block));
      if (!s.destroyed) s.once('drain', pump);
    };
    pump();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, close: () => server.close() };
}

/** 99 readers (and, with `stalled`, one that never reads) for `ms`: the 99's MB/s. */
async function fanIn(port: number, stalled: boolean, ms: number): Promise<number> {
  const socks: Socket[] = [];
  let bytes = 0;
  for (let i = 0; i < 99; i++) {
    const s = connect(port, '127.0.0.1');
    s.on('data', (c: Buffer) => {
      bytes += c.length;
    });
    s.on('error', () => {});
    socks.push(s);
  }
  if (stalled) {
    const s = connect(port, '127.0.0.1');
    s.pause();
    s.on('error', () => {});
    socks.push(s);
  }
  await new Promise((r) => setTimeout(r, 500)); // warm-up
  const b0 = bytes;
  await new Promise((r) => setTimeout(r, ms));
  const mbs = (bytes - b0) / 1e6 / (ms / 1000);
  for (const s of socks) s.destroy();
  return mbs;
}

function rssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

async function zstdRun(port: number, data: Buffer, total: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    const t0 = process.hrtime.bigint();
    let sent = 0;
    s.on('error', reject);
    s.on('data', () => {});
    s.on('close', () => resolve(total / 1e6 / (Number(process.hrtime.bigint() - t0) / 1e9)));
    const pump = (): void => {
      while (sent < total) {
        sent += data.length;
        if (!s.write(data)) {
          s.once('drain', pump);
          return;
        }
      }
      s.end();
    };
    pump();
  });
}

export async function runTunnel(root: string): Promise<string> {
  const l4 = buildL4bench(root);
  const work = join(root, 'bench/work');
  const [echo, sink] = (await freePorts(2)) as [number, number];
  const servers = [
    pinned(0, l4, ['echo-server', String(echo)]),
    pinned(0, l4, ['count-server', String(sink)]), // with bulkn: no half-close needed (ss-tunnel closes both ways on EOF)
  ];
  await waitForPort(echo);
  await waitForPort(sink);
  const results = new Map<string, Result>();
  const skipped: string[] = [];
  // BENCH_ONLY=zipline (a substring) measures only matching targets (direct is always kept)
  const only = process.env.BENCH_ONLY;
  const targets = makeTargets(root).filter(
    (t) => only === undefined || t.name === 'direct' || t.name.includes(only),
  );
  const scenarios = process.env.BENCH_SCENARIOS !== '0';
  const extra: string[] = [];
  try {
    for (let rep = 0; rep < REPS; rep++) {
      for (const t of targets) {
        if (t.skip !== undefined) {
          if (rep === 0) skipped.push(`${t.name}: ${t.skip}`);
          continue;
        }
        const r = results.get(t.name) ?? { p50: [], p99: [], mbs: [], cpuPerGb: [] };
        const run = await startTarget(t, () => t.start(work, { echo, sink }), skipped);
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
          `tunnel rep ${rep + 1}/${REPS} ${t.name}: p50 ${r.p50.at(-1)?.toFixed(1)} µs, ${r.mbs.at(-1)?.toFixed(0)} MB/s\n`,
        );
      }
    }
    if (scenarios)
      extra.push(...(await stalledScenario(root, work)), ...(await zstdScenario(root, work, { echo, sink })));
  } finally {
    for (const s of servers) await stop(s);
  }
  return report(results, skipped, extra);
}

async function stalledScenario(root: string, work: string): Promise<string[]> {
  const src = await startSource();
  const [fwd] = (await freePorts(1)) as [number];
  const z = await startZipline(
    root,
    work,
    { echo: src.port, sink: src.port },
    'stalled',
    'TLS_CHACHA20_POLY1305_SHA256',
    'none',
    `      - { listen: 127.0.0.1:${fwd}, to: 127.0.0.1:${src.port} }\n`,
  );
  try {
    const alone: number[] = [];
    const withStall: number[] = [];
    for (let i = 0; i < REPS; i++) {
      alone.push(await fanIn(fwd, false, 3000));
      withStall.push(await fanIn(fwd, true, 3000));
    }
    const a = spread(alone);
    const w = spread(withStall);
    const rss = z.pids.map(rssMiB);
    return [
      '### 100 streams, one reader stalled (zipline, TLS ChaCha20)',
      '',
      '| | the other 99, MB/s | share of 99 alone | peak RSS relay / agent |',
      '|---|---|---|---|',
      `| 99 streams alone | ${fmt(a, 0)} | 100 % | |`,
      `| 99 + 1 stalled | ${fmt(w, 0)} | ${((w.median / a.median) * 100).toFixed(0)} % | ${rss.map((m) => m.toFixed(0)).join(' / ')} MiB (session window 32 MiB) |`,
      '',
    ];
  } finally {
    await z.stop();
    src.close();
  }
}

async function zstdScenario(
  root: string,
  work: string,
  o: { echo: number; sink: number },
): Promise<string[]> {
  const total = 256 * 1024 * 1024;
  const rows: string[] = [];
  const lines: string[] = [];
  for (let i = 0; i < 200_000; i++) {
    lines.push(
      `${JSON.stringify({ id: i, user: `user-${i % 977}`, active: i % 3 === 0, score: (i * 7919) % 1000, tags: ['alpha', 'beta', i % 5 ? 'gamma' : 'delta'], ts: 1700000000000 + i * 37 })}\n`,
    );
  }
  // ~30 MiB of distinct records: longer than zstd's window at level 3, so repeats of the buffer
  // do not flatter the ratio
  const json = Buffer.from(lines.join(''));
  const random = randomBytes(1 << 20);
  const mbs: Record<string, Spread> = {};
  const ratios: Record<string, number> = {};
  for (const compression of ['none', 'zstd']) {
    const z = await startZipline(
      root,
      work,
      o,
      `zstd-${compression}`,
      'TLS_CHACHA20_POLY1305_SHA256',
      compression,
    );
    try {
      for (const [kind, data] of [
        ['JSON-like', json],
        ['random', random],
      ] as const) {
        const runs: number[] = [];
        const before = (await (await fetch(`http://127.0.0.1:${z.agentAdmin}/stats`)).json()) as {
          tunnel: { agent: { relays: { bytes_out: number }[] } };
        };
        for (let i = 0; i < REPS; i++) runs.push(await zstdRun(z.sink, data, total));
        const after = (await (await fetch(`http://127.0.0.1:${z.agentAdmin}/stats`)).json()) as {
          tunnel: { agent: { relays: { bytes_out: number }[] } };
        };
        mbs[`${compression} ${kind}`] = spread(runs);
        const wire =
          (after.tunnel.agent.relays[0]?.bytes_out ?? 0) - (before.tunnel.agent.relays[0]?.bytes_out ?? 0);
        ratios[`${compression} ${kind}`] = (total * REPS) / Math.max(1, wire);
      }
    } finally {
      await z.stop();
    }
  }
  for (const kind of ['JSON-like', 'random']) {
    rows.push(
      `| ${kind} | ${fmt(mbs[`none ${kind}`], 0)} | ${fmt(mbs[`zstd ${kind}`], 0)} | ${ratio(mbs[`zstd ${kind}`]?.median, mbs[`none ${kind}`]?.median)} | ${(ratios[`zstd ${kind}`] ?? 0).toFixed(2)}× |`,
    );
  }
  return [
    '### zstd (zipline, TLS ChaCha20, 256 MiB one way through a forward, Node client)',
    '',
    '| data | none MB/s | zstd MB/s | zstd ÷ none | payload ÷ wire bytes with zstd |',
    '|---|---|---|---|---|',
    ...rows,
    '',
  ];
}

function report(results: Map<string, Result>, skipped: string[], extra: string[]): string {
  const direct = results.get('direct');
  const d50 = direct ? spread(direct.p50).median : Number.NaN;
  const d99 = direct ? spread(direct.p99).median : Number.NaN;
  const rows = [...results].map(([name, r]) => {
    const p50 = spread(r.p50);
    const p99 = spread(r.p99);
    const add =
      name === 'direct' ? '—' : `+${(p50.median - d50).toFixed(1)} / +${(p99.median - d99).toFixed(1)}`;
    return `| ${name} | ${fmt(p50)} | ${fmt(p99)} | ${add} | ${fmt(spread(r.mbs), 0)} | ${r.cpuPerGb.length ? fmt(spread(r.cpuPerGb), 2) : '—'} |`;
  });
  const chacha = results.get('zipline TLS 1.3 CHACHA20-POLY1305');
  const one = results.get('zipline one process CHACHA20-POLY1305');
  const aes = results.get('zipline TLS 1.3 AES-256-GCM');
  const ssChacha = results.get('shadowsocks-libev chacha20-ietf-poly1305');
  const stunnel = results.get('stunnel TLS 1.3 AES-256-GCM');
  const med = (r: Result | undefined, k: keyof Result): number | undefined =>
    r ? spread(r[k]).median : undefined;
  const added = (r: Result | undefined): number => (med(r, 'p50') ?? Number.NaN) - d50;
  return [
    `${new Date().toISOString().slice(0, 10)} · ${machineLine()} · both halves of each tunnel on CPU 1, origins and client on CPU 0 · ${REPS} runs, median (min–max)`,
    '',
    '| target | 64 B RTT p50 µs | p99 µs | added p50 / p99 µs | bulk MB/s (1 GiB) | tunnel CPU-s per GB |',
    '|---|---|---|---|---|---|',
    ...rows,
    '',
    `Goals, same run (agent and relay as two processes / as one process): ChaCha20 bulk ÷ shadowsocks chacha20 = ${ratio(med(chacha, 'mbs'), med(ssChacha, 'mbs'))} / ${ratio(med(one, 'mbs'), med(ssChacha, 'mbs'))} (≥ 1); AES-GCM bulk ÷ stunnel = ${ratio(med(aes, 'mbs'), med(stunnel, 'mbs'))} (≥ 0.9); added p50 ÷ stunnel's = ${ratio(added(chacha), added(stunnel))} / ${ratio(added(one), added(stunnel))} (≤ 1).`,
    '',
    ...extra,
    ...(skipped.length ? ['Skipped:', ...skipped.map((s) => `- ${s}`), ''] : []),
  ].join('\n');
}
