/** Starting zipline in tests: in-process (`startRuntime`) or as the real CLI process (`spawnZipline`). */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Logger, pino } from 'pino';
import { loadConfigText } from '../../src/config/load.js';
import { Runtime } from '../../src/core/runtime.js';
import type { LookupAll } from '../../src/upstream/upstream.js';
import { tempDir } from './temp.js';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const BIN = join(ROOT, 'bin/zipline.js');

export interface AccessLine {
  [key: string]: unknown;
}

/** A runtime in this process, access log captured in memory. */
export async function startRuntime(
  yaml: string,
  opts: { lookup?: LookupAll; log?: Logger } = {},
): Promise<{
  rt: Runtime;
  access: AccessLine[];
  addr: (listener: string) => string;
  stop: () => Promise<void>;
}> {
  const r = loadConfigText(yaml, {});
  if (!r.ok)
    throw new Error(`bad test config:\n${r.issues.map((i) => `${i.path}: ${i.message}`).join('\n')}`);
  // never a fixed port: a config that does not place the admin server gets one on port 0
  const admin = /^admin:/m.test(yaml) ? r.config.admin : { ...r.config.admin, listen: '127.0.0.1:0' };
  const config = { ...r.config, admin, log: { ...r.config.log, access: 'off' } };
  const rt = new Runtime(config, {
    log: opts.log ?? pino({ level: 'silent' }),
    ...(opts.lookup ? { lookup: opts.lookup } : {}),
  });
  const access: AccessLine[] = [];
  rt.accessLog = {
    enabled: true,
    write: (e) => access.push(e),
    // every line must be one JSON object and a newline (JSON.parse throws otherwise)
    writeLine: (line) => {
      if (!line.endsWith('}\n')) throw new Error(`access line without its newline: ${line}`);
      access.push(JSON.parse(line) as AccessLine);
    },
    reopen() {},
    close: () => Promise.resolve(),
  };
  await rt.start();
  return {
    rt,
    access,
    addr: (name) => {
      const l = rt.listeners.get(name);
      if (l === undefined) throw new Error(`no listener ${name}`);
      return l.address();
    },
    stop: () => rt.drain(),
  };
}

export interface ZiplineProcess {
  readonly proc: ChildProcess;
  readonly admin: string;
  readonly stdout: string[];
  readonly stderr: string[];
  readonly configFile: string;
  stats(): Promise<Stats>;
  listener(name: string): Promise<string>;
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Resolves with the exit code when the process exits by itself. */
  exited: Promise<number | null>;
}

export interface Stats {
  listeners: Record<string, { address: string; active?: number; sessions?: number }>;
  upstreams: Record<
    string,
    {
      balance: string;
      servers: { address: string; state: string; total: number; failures: number; active: number }[];
    }
  >;
  [k: string]: unknown;
}

export function writeConfig(yaml: string): string {
  const dir = tempDir('zipline-test-');
  const file = join(dir, 'zipline.yaml');
  writeFileSync(file, yaml);
  return file;
}

/**
 * Runs `bin/zipline.js run -c FILE` and resolves once it has started (admin URL known). `wrap`: a
 * command that execs its arguments (same PID), e.g. `unshare -m sh -c '…; exec "$@"' sh`. `fds`:
 * descriptors of this process the child gets from descriptor 3 on (as systemd passes sockets).
 */
export async function spawnZipline(
  yaml: string,
  env: NodeJS.ProcessEnv = {},
  wrap: readonly string[] = [],
  fds: readonly number[] = [],
): Promise<ZiplineProcess> {
  // never a fixed port: a config that does not place the admin server gets one on port 0
  const configFile = writeConfig(/^admin:/m.test(yaml) ? yaml : `admin: { listen: 127.0.0.1:0 }\n${yaml}`);
  const argv = [...wrap, process.execPath, BIN, 'run', '-c', configFile];
  const proc = spawn(argv[0] as string, argv.slice(1), {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', ...fds],
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  const feed = (into: string[]) => {
    let partial = '';
    return (chunk: Buffer): void => {
      const text = partial + chunk.toString('utf8');
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        into.push(line);
        for (const w of [...waiters]) {
          if (w.re.test(line)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(line);
          }
        }
      }
    };
  };
  proc.stdout?.on('data', feed(stdout));
  proc.stderr?.on('data', feed(stderr));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const waitForLog = (re: RegExp, timeoutMs = 15_000): Promise<string> => {
    const seen = [...stdout, ...stderr].find((l) => re.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`no log line matching ${re}; stderr:\n${stderr.join('\n')}`)),
        timeoutMs,
      );
      waiters.push({
        re,
        resolve: (l) => {
          clearTimeout(t);
          resolve(l);
        },
      });
      void exited.then((code) => {
        clearTimeout(t);
        reject(new Error(`zipline exited (${code}) before ${re}; stderr:\n${stderr.join('\n')}`));
      });
    });
  };
  const started = await waitForLog(/"msg":"zipline started"/);
  const admin = (JSON.parse(started) as { admin: string }).admin;
  const stats = async (): Promise<Stats> => (await (await fetch(`${admin}stats`)).json()) as Stats;
  return {
    proc,
    admin,
    stdout,
    stderr,
    configFile,
    stats,
    listener: async (name) => {
      const s = await stats();
      const l = s.listeners[name];
      if (l === undefined) throw new Error(`no listener ${name}`);
      return l.address;
    },
    waitForLog,
    exited,
    stop: async (signal = 'SIGTERM') => {
      if (proc.exitCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/**
 * Ends the process an upgrade started (not the test's child), and the old one if a failed test
 * left it draining, and waits until both are gone (their shared output closed: `outputClosed` is
 * `once(z.proc.stdout, 'close')`, taken before the upgrade).
 */
export async function stopSuccessor(
  z: ZiplineProcess,
  pid: number,
  outputClosed: Promise<unknown>,
): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    // already gone
  }
  if (z.proc.exitCode === null && z.proc.signalCode === null) z.proc.kill('SIGKILL');
  await outputClosed;
  await z.exited;
}

/**
 * Runs the CLI to completion. A command still running after `timeoutMs` (a `run` that was meant
 * to fail but started) is killed: its code is then null.
 */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 30_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } });
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    proc.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    proc.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
