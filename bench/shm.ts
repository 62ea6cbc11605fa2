/**
 * `npm run bench -- shm`: the shared-memory bridge's C → Node latency and throughput, in both
 * wake-up modes, beside a Unix stream socket, and `GET /shm` latency, in one run.
 *
 * - latency: a C program sends 20,000 stamped 64-byte messages 50 µs apart; zipline's bridge
 *   (futex or poll) receives them; one-way latency = receive time − send time (both
 *   CLOCK_MONOTONIC); p50/p99. The Unix socket row uses the same C sender and a Node `net` reader.
 * - throughput: the C program sends 2,000,000 messages as fast as the ring takes them; messages/s
 *   until the bridge has received them all.
 * - Node → C: zipline sends 20,000 stamped messages 50 µs apart; the C side waits on the futex
 *   (`zl_shm_recv`) and reports p50/p99.
 * - GET /shm: 5,000 sequential requests from Node's http client over keep-alive; p50/p99.
 * The C side runs on CPU 0, zipline on CPU 1 when taskset exists.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { pino } from 'pino';
import { ShmBridge } from '../src/shm/bridge.js';
import { ShmHttpServer } from '../src/shm/http.js';
import { have, machineLine } from './lib/proc.js';

const LAT_COUNT = Number(process.env.BENCH_SHM_COUNT ?? 20_000);
const FLOOD = Number(process.env.BENCH_SHM_FLOOD ?? 2_000_000);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? Number.NaN;
}

function now(): bigint {
  return process.hrtime.bigint();
}

function runC(tool: string, args: string[]): Promise<string> {
  const [file, argv] = have('taskset') ? ['taskset', ['-c', '0', tool, ...args]] : [tool, args];
  return new Promise((resolve, reject) => {
    const p = spawn(file, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${tool} exited ${code}`))));
  });
}

function bridge(segment: string, wake: 'futex' | 'poll'): ShmBridge {
  const b = new ShmBridge({
    name: `bench-${wake}`,
    segment,
    snapshotCapacity: 4096,
    uploadBuffer: 4096,
    slots: 4096,
    slotSize: 128,
    create: true,
    mode: 0o600,
    removeOnExit: true,
    http: '127.0.0.1:0',
    wake,
  });
  b.open();
  return b;
}

async function latency(tool: string, wake: 'futex' | 'poll'): Promise<number[]> {
  const seg = `/zl-bench-${process.pid}-${wake}`;
  const b = bridge(seg, wake);
  const samples: number[] = [];
  b.onMessage((m) => {
    samples.push(Number(now() - m.data.readBigUInt64LE(0)) / 1000);
  });
  try {
    await runC(tool, ['latency', seg, String(LAT_COUNT), '50']);
    const deadline = Date.now() + 5000;
    while (samples.length < LAT_COUNT && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  } finally {
    b.close();
  }
  return samples.slice(Math.floor(LAT_COUNT / 10)).sort((a, z) => a - z); // 10 % warm-up
}

async function throughput(tool: string, wake: 'futex' | 'poll'): Promise<number> {
  const seg = `/zl-bench-${process.pid}-flood-${wake}`;
  const b = bridge(seg, wake);
  let received = 0;
  let lastAt = 0n;
  b.onBatch((batch) => {
    received += batch.count;
    lastAt = now();
  });
  try {
    const t0 = now();
    await runC(tool, ['flood', seg, String(FLOOD)]);
    const deadline = Date.now() + 20_000;
    while (received < FLOOD && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return received / (Number(lastAt - t0) / 1e9);
  } finally {
    b.close();
  }
}

/** Node → C: zipline sends stamped messages 50 µs apart; the C side (futex wait) times them. */
async function nodeToC(tool: string): Promise<{ p50: number; p99: number }> {
  const seg = `/zl-bench-${process.pid}-n2c`;
  const b = bridge(seg, 'futex');
  const [file, argv] = have('taskset') ? ['taskset', ['-c', '0', tool]] : [tool, []];
  const child = spawn(file, [...argv, 'recv', seg, String(LAT_COUNT)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  const ready = new Promise<void>((resolve) =>
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('ready')) resolve();
    }),
  );
  const done = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  try {
    await ready;
    const msg = Buffer.alloc(64, 0x5a);
    for (let i = 0; i < LAT_COUNT; i++) {
      msg.writeBigUInt64LE(now(), 0);
      for (;;) {
        try {
          b.send(msg);
          break;
        } catch {
          // ring full: the reader is behind; try again
        }
      }
      const next = now() + 50_000n;
      while (now() < next) {
        // pace 50 µs apart, as the C sender does
      }
    }
    await done;
  } finally {
    b.close();
  }
  const r = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as { p50_us: number; p99_us: number };
  return { p50: r.p50_us, p99: r.p99_us };
}

async function unixLatency(tool: string, work: string): Promise<number[]> {
  const path = join(work, 'shmbench.sock');
  rmSync(path, { force: true });
  const samples: number[] = [];
  const server = createServer((s) => {
    let pending: Buffer = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      const at = now();
      pending = pending.length === 0 ? c : Buffer.concat([pending, c]);
      while (pending.length >= 64) {
        samples.push(Number(at - pending.readBigUInt64LE(0)) / 1000);
        pending = pending.subarray(64);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  try {
    await runC(tool, ['unix', path, String(LAT_COUNT), '50']);
    const deadline = Date.now() + 5000;
    while (samples.length < LAT_COUNT && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  } finally {
    server.close();
    rmSync(path, { force: true });
  }
  return samples.slice(Math.floor(LAT_COUNT / 10)).sort((a, z) => a - z);
}

async function getLatency(): Promise<number[]> {
  const seg = `/zl-bench-${process.pid}-http`;
  const b = bridge(seg, 'futex');
  b.write(Buffer.alloc(64, 'x'), null);
  const server = new ShmHttpServer('127.0.0.1:0', new Map([['bench', b]]), pino({ level: 'silent' }), 16);
  await server.start();
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const [host, port] = server.address().split(':') as [string, string];
  const samples: number[] = [];
  try {
    for (let i = 0; i < 5000; i++) {
      const t0 = now();
      await new Promise<void>((resolve, reject) => {
        request({ host, port: Number(port), path: '/shm/bench', agent }, (res) => {
          res.resume();
          res.on('end', resolve);
        })
          .on('error', reject)
          .end();
      });
      samples.push(Number(now() - t0) / 1000);
    }
  } finally {
    agent.destroy();
    await server.close();
    b.close();
  }
  return samples.slice(500).sort((a, z) => a - z);
}

export async function runShm(root: string): Promise<string> {
  const work = join(root, 'bench/work');
  mkdirSync(work, { recursive: true });
  const tool = join(work, 'shmbench');
  execFileSync('cc', [
    '-std=c11',
    '-O2',
    '-I',
    join(root, 'native/include'),
    join(root, 'bench/c/shmbench.c'),
    join(root, 'native/lib/zipline_shm.c'),
    '-o',
    tool,
  ]);
  const rows: string[] = [];
  const fmt = (v: number): string => (Number.isFinite(v) ? v.toFixed(1) : '—');
  for (const wake of ['futex', 'poll'] as const) {
    const s = await latency(tool, wake);
    const rate = await throughput(tool, wake);
    rows.push(
      `| zipline bridge, wake: ${wake} | ${fmt(percentile(s, 0.5))} | ${fmt(percentile(s, 0.99))} | ${(rate / 1e6).toFixed(2)} M |`,
    );
  }
  const n2c = await nodeToC(tool);
  rows.push(`| Node→C (zipline sends, C waits on the futex) | ${fmt(n2c.p50)} | ${fmt(n2c.p99)} | — |`);
  const u = await unixLatency(tool, work);
  rows.push(
    `| Unix stream socket (Node \`net\` reader) | ${fmt(percentile(u, 0.5))} | ${fmt(percentile(u, 0.99))} | — |`,
  );
  const g = await getLatency();
  return [
    `${machineLine()}; C sender on CPU 0, the Node side in this process; ${LAT_COUNT} messages 50 µs apart (10 % warm-up), ${FLOOD} for throughput.`,
    '',
    '| path | one-way p50 µs | p99 µs | C→Node messages/s |',
    '|---|---|---|---|',
    ...rows,
    '',
    `\`GET /shm/NAME\` (64-byte snapshot, keep-alive, sequential): p50 ${fmt(percentile(g, 0.5))} µs, p99 ${fmt(percentile(g, 0.99))} µs.`,
  ].join('\n');
}
