/**
 * Real servers nobody here wrote, for interop tests: nginx, HAProxy, redis-server and dnsmasq on loopback, each in
 * a temporary directory on a free port, stopped by the returned function. `have()` says whether a
 * tool is installed (`.ci/run` installs them; a test without its tool is skipped with a note).
 */
import { execFile, spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { refusedPort, until } from './net.js';
import { tempDir } from './temp.js';

export const have = (tool: string): boolean =>
  spawnSync('sh', ['-c', `command -v ${tool} || test -x /usr/sbin/${tool}`]).status === 0;

function accepting(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export interface Daemon {
  readonly port: number;
  stop(): void;
}

/** nginx with `server { … }` bodies given by `servers(port)`. */
export async function startNginx(servers: (port: number) => string, http = ''): Promise<Daemon> {
  const work = tempDir('zl-nginx-');
  const port = await refusedPort();
  writeFileSync(
    join(work, 'nginx.conf'),
    `worker_processes 1;
daemon off;
pid ${work}/nginx.pid;
error_log ${work}/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${work};
  ${http}
  ${servers(port)}
}
`,
  );
  const nginx = spawn('nginx', ['-c', join(work, 'nginx.conf'), '-p', work, '-e', join(work, 'error.log')], {
    stdio: 'ignore',
  });
  await until(() => accepting(port), 'nginx accepting', 10_000, 25);
  return { port, stop: () => nginx.kill('SIGTERM') };
}

/** redis-server without persistence. */
export async function startRedis(): Promise<Daemon> {
  const port = await refusedPort();
  const work = tempDir('zl-redis-');
  const redis = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', work],
    { stdio: 'ignore' },
  );
  await until(() => accepting(port), 'redis accepting', 10_000, 25);
  return { port, stop: () => redis.kill('SIGTERM') };
}

/**
 * HAProxy with the given sections after its defaults (`config(port)`: `port` is free for the
 * first frontend; `more` other free ports for the rest, known before HAProxy starts).
 */
export async function startHaproxy(
  config: (port: number, more: readonly number[]) => string,
  extra = 0,
): Promise<Daemon & { more: readonly number[] }> {
  const work = tempDir('zl-haproxy-');
  const port = await refusedPort();
  const more: number[] = [];
  for (let i = 0; i < extra; i++) more.push(await refusedPort());
  writeFileSync(
    join(work, 'haproxy.cfg'),
    `global
  log stderr format raw local0 err
defaults
  timeout connect 2s
  timeout client 10s
  timeout server 10s
${config(port, more)}
`,
  );
  const haproxy = spawn('haproxy', ['-f', join(work, 'haproxy.cfg')], { stdio: 'ignore' });
  await until(() => accepting(port), 'haproxy accepting', 10_000, 25);
  return { port, more, stop: () => haproxy.kill('SIGTERM') };
}

/** dnsmasq as a DNS server on UDP and TCP: `*.NAME` answers `address`, nothing forwarded. */
export async function startDnsmasq(name: string, address: string): Promise<Daemon> {
  const port = await refusedPort();
  const dns = spawn(
    'dnsmasq',
    [
      '--keep-in-foreground',
      `--port=${port}`,
      '--listen-address=127.0.0.1',
      '--bind-interfaces',
      '--no-resolv',
      '--no-hosts',
      '--conf-file=/dev/null',
      '--pid-file=',
      `--address=/${name}/${address}`,
    ],
    { stdio: 'ignore' },
  );
  await until(() => accepting(port), 'dnsmasq accepting', 10_000, 25);
  return { port, stop: () => dns.kill('SIGTERM') };
}

export function run(
  cmd: string,
  args: string[],
  opts: { input?: Buffer; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { maxBuffer: 64 * 1024 * 1024, timeout: opts.timeoutMs ?? 30_000, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}
