/**
 * `zipline run` under systemd. The notify protocol (sd_notify): a real `zipline run` process with
 * NOTIFY_SOCKET set, and socat receiving the datagrams on an AF_UNIX socket as systemd would:
 * READY=1 once it serves, RELOADING=1 … READY=1 around a SIGHUP reload, WATCHDOG=1 pings,
 * MAINPID= at an upgrade, STOPPING=1 at a drain. Socket activation (sd_listen_fds): sockets bound
 * here and passed from descriptor 3 with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (set by a shell
 * that then execs zipline, as systemd sets it between fork and exec).
 */
import assert from 'node:assert/strict';
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { dgramBound } from '../../src/l4/listen.js';
import { have } from '../helpers/daemons.js';
import { getOnce, startOrigin } from '../helpers/http.js';
import { port, udpClient, udpEcho, until } from '../helpers/net.js';
import { tempDir } from '../helpers/temp.js';
import { ROOT, spawnZipline, stopSuccessor } from '../helpers/zipline.js';

const cleanup: Array<() => unknown> = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

const ADDON = existsSync(join(ROOT, 'build/Release/zipline_proc.node'));

/** What a notify socket received: the datagrams' lines, in order. */
async function notifySocket(): Promise<{ path: string; lines: () => string[] }> {
  const path = join(tempDir('zipline-notify-'), 'notify.sock');
  const rx: ChildProcessByStdio<null, Readable, null> = spawn(
    'socat',
    ['-u', `UNIX-RECV:${path}`, 'STDOUT'],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  let text = '';
  rx.stdout.on('data', (d: Buffer) => {
    text += d.toString();
  });
  cleanup.push(() => {
    rx.kill();
    return once(rx, 'exit');
  });
  await until(() => existsSync(path), 'socat listening on the notify socket');
  return { path, lines: () => text.split('\n') };
}

describe('systemd notify (Type=notify)', {
  skip:
    process.platform !== 'linux' || !ADDON
      ? 'Linux with the native addon built'
      : have('socat')
        ? false
        : 'socat is needed (apt-get install socat)',
}, () => {
  test('READY=1 once serving, RELOADING=1 then READY=1 around a reload, WATCHDOG=1, MAINPID= at an upgrade, STOPPING=1 at the drain', async () => {
    const notify = await notifySocket();
    const z = await spawnZipline(
      `
log: { access: off }
upstreams:
  web: { servers: [127.0.0.1:9] }
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, upstream: web }
`,
      { NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: '200000' },
    );
    const outputClosed = once(z.proc.stdout as NodeJS.ReadableStream, 'close');
    cleanup.push(() => z.stop('SIGKILL'));
    await until(() => notify.lines().includes('READY=1'), 'READY=1');
    assert.ok(
      notify.lines().includes('STATUS=serving 1 listeners, config generation 1'),
      notify.lines().join('|'),
    );
    await until(() => notify.lines().includes('WATCHDOG=1'), 'a watchdog ping');

    z.proc.kill('SIGHUP');
    await until(() => notify.lines().includes('RELOADING=1'), 'RELOADING=1');
    const afterReload = (): string[] => notify.lines().slice(notify.lines().indexOf('RELOADING=1'));
    assert.match(afterReload()[1] ?? '', /^MONOTONIC_USEC=\d+$/);
    await until(() => afterReload().includes('READY=1'), 'READY=1 after the reload');
    assert.ok(afterReload().includes('STATUS=serving 1 listeners, config generation 2'));

    const res = await fetch(`${z.admin}upgrade`, { method: 'POST' });
    const outcome = (await res.json()) as { result: string; pid: number };
    assert.equal(outcome.result, 'upgraded');
    cleanup.push(() => stopSuccessor(z, outcome.pid, outputClosed));
    await until(() => notify.lines().includes(`MAINPID=${outcome.pid}`), 'MAINPID= the new process');
    // the old process drains without STOPPING=1: the service goes on, in the new process
    assert.equal(await z.exited, 0);
    assert.ok(!notify.lines().includes('STOPPING=1'), notify.lines().join('|'));

    process.kill(outcome.pid, 'SIGTERM');
    await until(() => notify.lines().includes('STOPPING=1'), 'STOPPING=1 from the new process at its drain');
    await outputClosed;
  });

  test('NOTIFY_SOCKET that nobody listens on: zipline serves, and says once why systemd was not told', async () => {
    const missing = join(tempDir('zipline-notify-'), 'nobody.sock');
    const z = await spawnZipline('log: { access: off }\n', { NOTIFY_SOCKET: missing });
    cleanup.push(() => z.stop('SIGKILL'));
    const line = await z.waitForLog(/could not notify systemd/);
    assert.match(line, /READY=1/);
    assert.equal((await fetch(`${z.admin}healthz`)).status, 200);
    assert.equal(await z.stop(), 0);
  });
});

/** A listening TCP socket on a free loopback port and its descriptor (the test closes its own handle). */
async function tcpSocket(): Promise<{ server: Server; fd: number; port: number }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  return { server, fd, port: port(server) };
}

/** `sh` sets LISTEN_PID to its own PID, then execs zipline: the same PID, as systemd does it. */
const AS_SYSTEMD = ['sh', '-c', 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', 'sh'];

describe('systemd socket activation (LISTEN_FDS)', {
  skip: process.platform !== 'linux' || !ADDON ? 'Linux with the native addon built' : false,
}, () => {
  test('sockets passed by name serve the listeners (http, udp) and the admin API; one no listener is named for is logged; an upgrade hands them on', async () => {
    const origin = await startOrigin((_req, res) => res.end('ok'));
    const echo = await udpEcho();
    cleanup.push(
      () => origin.close(),
      () => echo.close(),
    );
    const web = await tcpSocket();
    const admin = await tcpSocket();
    const extra = await tcpSocket();
    const dns = await udpClient();
    const dnsBound = dgramBound(dns);
    assert.ok(dnsBound !== null);
    const z = await spawnZipline(
      `
admin: { listen: 127.0.0.1:0 }
log: { access: off }
upstreams:
  web: { servers: [${origin.address}] }
  echo: { servers: [127.0.0.1:${port(echo)}] }
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, upstream: web }
  - { name: dns, protocol: udp, listen: 127.0.0.1:0, upstream: echo, udp: { responses: 1 } }
`,
      { LISTEN_FDS: '4', LISTEN_FDNAMES: 'web:admin:dns:extra' },
      AS_SYSTEMD,
      [web.fd, admin.fd, dnsBound.fd, extra.fd],
    );
    // the child has its copies: this process stops listening on them
    for (const s of [web.server, admin.server, extra.server]) s.close();
    dns.close();
    const outputClosed = once(z.proc.stdout as NodeJS.ReadableStream, 'close');
    cleanup.push(() => z.stop('SIGKILL'));
    assert.equal(new URL(z.admin).port, String(admin.port), 'the admin API on the socket named admin');
    assert.equal(await z.listener('web'), `127.0.0.1:${web.port}`);
    assert.equal(await z.listener('dns'), `127.0.0.1:${dnsBound.port}`);
    assert.equal((await getOnce(`127.0.0.1:${web.port}`)).body, 'ok');
    const u = await udpClient();
    cleanup.push(() => u.close());
    u.send('ping', dnsBound.port, '127.0.0.1');
    const [reply] = (await once(u, 'message')) as [Buffer];
    assert.equal(reply.toString(), 'ping');
    await z.waitForLog(
      new RegExp(`systemd socket not used: fd 6 .*extra.* \\(stream, port ${extra.port}\\)`),
    );

    const res = await fetch(`${z.admin}upgrade`, { method: 'POST' });
    const outcome = (await res.json()) as { result: string; pid: number; sockets: number };
    assert.equal(outcome.result, 'upgraded');
    cleanup.push(() => stopSuccessor(z, outcome.pid, outputClosed));
    assert.equal(outcome.sockets, 3, 'admin, web, dns');
    assert.equal(await z.exited, 0);
    assert.equal(
      (await getOnce(`127.0.0.1:${web.port}`)).body,
      'ok',
      'the new process serves the same socket',
    );
    await stopSuccessor(z, outcome.pid, outputClosed);
  });

  test('with workers > 1: refused at start, saying why (each worker binds its own socket)', async () => {
    const web = await tcpSocket();
    const z = spawnZipline(
      `
workers: 2
upstreams:
  web: { servers: [127.0.0.1:9] }
listeners:
  - { name: web, protocol: http, listen: 127.0.0.1:0, upstream: web }
`,
      { LISTEN_FDS: '1', LISTEN_FDNAMES: 'web' },
      AS_SYSTEMD,
      [web.fd],
    );
    web.server.close();
    await assert.rejects(z, /zipline exited \(3\)[\s\S]*socket activation[\s\S]*use workers: 1/);
  });
});
