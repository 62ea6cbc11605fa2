/** Process plumbing for benchmarks: pinned child processes, CPU accounting, ports, tools. */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';

/** Builds bench/c/l4bench.c (the C load tool of the l4 and tunnel suites) into bench/work/. */
export function buildL4bench(root: string): string {
  const out = join(root, 'bench/work/l4bench');
  mkdirSync(join(root, 'bench/work'), { recursive: true });
  execFileSync('cc', ['-O2', '-std=c11', '-pthread', join(root, 'bench/c/l4bench.c'), '-o', out]);
  return out;
}

/** Waits (up to 10 s) until a zipline admin server answers /readyz 200. */
export async function waitReady(adminPort: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const r = await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => null);
    if (r?.status === 200) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`zipline on admin port ${adminPort} did not become ready`);
}

export function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** `n` distinct free ports: all held open together while they are picked, then released. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createServer());
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))));
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

/** Starts `cmd` pinned to one CPU (when taskset exists). */
export function pinned(
  cpu: number,
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): ChildProcess {
  const [file, argv] = have('taskset') ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args];
  return spawn(file, argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Runs `cmd` pinned and returns its stdout. */
export function runPinned(cpu: number, cmd: string, args: string[]): string {
  const [file, argv] = have('taskset') ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args];
  return execFileSync(file, argv, { encoding: 'utf8', timeout: 300_000 });
}

export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`port ${port} did not open`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const TICK_S = 0.01; // USER_HZ is 100 on Linux

/** user+system CPU seconds of a process and all its descendants. */
export function cpuSeconds(pid: number): number {
  let ticks = 0;
  const visit = (p: number): void => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
      for (const t of readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/)) {
        if (t) visit(Number(t));
      }
    } catch {
      // the process ended
    }
  };
  visit(pid);
  return ticks * TICK_S;
}

/**
 * Stops a peer the way its operator would (SIGTERM: nginx's master then stops its workers too),
 * and SIGKILLs it if it has not exited within 3 s.
 */
export function stop(p: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve();
    const force = setTimeout(() => p.kill('SIGKILL'), 3000);
    p.once('exit', () => {
      clearTimeout(force);
      resolve();
    });
    p.kill('SIGTERM');
  });
}

export function machineLine(): string {
  const cpu = existsSync('/proc/cpuinfo')
    ? (/model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown cpu')
    : 'unknown cpu';
  return `${cpu}, ${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores, Linux ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()}, Node ${process.version}`;
}

/**
 * How a config loads an nginx module: `''` when nginx has it built in, a `load_module` line when
 * Debian ships it as a dynamic module that is installed, null when nginx cannot have it.
 */
export function nginxModule(name: string): string | null {
  if (!have('nginx')) return null;
  const r = spawnSync('nginx', ['-V'], { encoding: 'utf8' });
  const flags = `${r.stdout ?? ''} ${r.stderr ?? ''}`.split(/\s+/);
  if (flags.includes(`--with-${name}`)) return '';
  const so = `/usr/lib/nginx/modules/ngx_${name}_module.so`;
  return flags.includes(`--with-${name}=dynamic`) && existsSync(so) ? `load_module ${so};` : null;
}

/**
 * Starts one target of a suite. zipline failing to start ends the suite (that is a bug to see);
 * a peer failing to start (a missing module, a port it would not open) is skipped from then on
 * with the reason in the report, never measured half.
 */
export async function startTarget<R>(
  t: { name: string; skip?: string | undefined },
  start: () => Promise<R>,
  skipped: string[],
): Promise<R | null> {
  try {
    return await start();
  } catch (err) {
    if (t.name.startsWith('zipline')) throw err;
    t.skip = `did not start (${(err as Error).message}; its log is in bench/work/)`;
    skipped.push(`${t.name}: ${t.skip}`);
    return null;
  }
}
