/**
 * `zipline run` under systemd's notify protocol (sd_notify): a real `zipline run` process with
 * NOTIFY_SOCKET set, and socat receiving the datagrams on an AF_UNIX socket as systemd would:
 * READY=1 once it serves, RELOADING=1 … READY=1 around a SIGHUP reload, WATCHDOG=1 pings,
 * MAINPID= at an upgrade, STOPPING=1 at a drain.
 */
import assert from 'node:assert/strict';
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { have } from '../helpers/daemons.js';
import { until } from '../helpers/net.js';
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
