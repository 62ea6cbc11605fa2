/** The real `zipline run` process: reload under load (SIGHUP, POST /reload) and graceful drain. */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { closed, closeServer, dial, port, readAll, tcpEcho, until } from '../helpers/net.js';
import { tempDir } from '../helpers/temp.js';
import { spawnZipline, startRuntime } from '../helpers/zipline.js';

function config(a: number, b: number, balance: string, extraListener = ''): string {
  return `
admin: { listen: 127.0.0.1:0 }
log: { access: off }
drain_timeout: 10s
upstreams:
  up: { balance: ${balance}, servers: [127.0.0.1:${a}, 127.0.0.1:${b}] }
listeners:
  - { name: main, protocol: tcp, listen: 127.0.0.1:0, upstream: up }
${extraListener}
`;
}

/** A client that streams and checks its echo until stopped. */
class Streamer {
  sent = 0;
  received = 0;
  error: Error | null = null;
  private stopping = false;
  private readonly chunk = Buffer.alloc(16 * 1024, 0x61);
  constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.received += d.length;
    });
    socket.on('error', (e) => {
      this.error = e;
    });
    this.pump();
  }
  private pump(): void {
    while (!this.stopping && this.sent - this.received < 256 * 1024) {
      this.sent += this.chunk.length;
      if (!this.socket.write(this.chunk)) return void this.socket.once('drain', () => this.pump());
    }
    if (!this.stopping) setImmediate(() => this.pump());
  }
  async finish(): Promise<void> {
    this.stopping = true;
    this.socket.end();
    await once(this.socket, 'end');
  }
}

describe('lifecycle', () => {
  test('SIGHUP under load: 50 streaming connections survive a reload that adds a listener and changes the balancer', async () => {
    const a = await tcpEcho();
    const b = await tcpEcho();
    const z = await spawnZipline(config(port(a), port(b), 'round_robin'));
    try {
      const main = await z.listener('main');
      const streams: Streamer[] = [];
      for (let i = 0; i < 50; i++) streams.push(new Streamer(await dial(main)));
      const before = streams.reduce((n, s) => n + s.received, 0);
      writeFileSync(
        z.configFile,
        config(
          port(a),
          port(b),
          'least_conn',
          '  - { name: extra, protocol: tcp, listen: 127.0.0.1:0, upstream: up }',
        ),
      );
      z.proc.kill('SIGHUP');
      await z.waitForLog(/"msg":"config reloaded"/);
      const stats = await z.stats();
      assert.equal(stats.upstreams.up?.balance, 'least_conn');
      const extra = await z.listener('extra');
      const c = await dial(extra);
      c.end('via the new listener');
      assert.equal((await readAll(c)).toString(), 'via the new listener');
      // the old connections kept flowing across the reload
      const mid = streams.reduce((n, s) => n + s.received, 0);
      await new Promise<void>((resolve) => {
        const check = (): void => {
          if (
            streams.every((s) => s.received > 0) &&
            streams.reduce((n, s) => n + s.received, 0) > mid + 50 * 65536
          )
            resolve();
          else setTimeout(check, 20);
        };
        check();
      });
      await Promise.all(streams.map((s) => s.finish()));
      for (const s of streams) {
        assert.equal(s.error, null);
        assert.equal(s.received, s.sent, 'every byte echoed');
      }
      assert.ok(mid > before);
      assert.equal(await z.listener('main'), main, 'the unchanged listener kept its socket');

      // a broken config is refused and reported; the old one keeps running
      writeFileSync(z.configFile, 'upstreams: { up: { servers: [nope] } }\nlisteners: 7\n');
      z.proc.kill('SIGHUP');
      const refusedLine = await z.waitForLog(/"msg":"reload refused/);
      assert.match(refusedLine, /servers\[0\]/);
      const res = await fetch(`${z.admin}reload`, { method: 'POST' });
      assert.equal(res.status, 422);
      const body = (await res.json()) as { result: string; error: string; errors: string[] };
      assert.equal(body.result, 'refused');
      assert.equal(body.error, 'ZL_RELOAD_REFUSED');
      assert.match(refusedLine, /"code":"ZL_RELOAD_REFUSED"/);
      assert.ok(
        body.errors.some((e) => /^listeners \(line 2:1\)/.test(e)),
        body.errors.join('\n'),
      );
      const again = await dial(main);
      again.end('still here');
      assert.equal((await readAll(again)).toString(), 'still here');
      // and a good one via POST /reload reports what changed
      writeFileSync(z.configFile, config(port(a), port(b), 'p2c'));
      const ok = (await (await fetch(`${z.admin}reload`, { method: 'POST' })).json()) as {
        result: string;
        listeners: { removed: string[] };
        upstreams: { changed: string[] };
      };
      assert.equal(ok.result, 'applied');
      assert.deepEqual(ok.listeners.removed, ['extra']);
      assert.deepEqual(ok.upstreams.changed, ['up']);
    } finally {
      await z.stop();
      await closeServer(a);
      await closeServer(b);
    }
  });

  test('access log file: a reload after logrotate moved it writes to a new file; a failing destination is counted, never an internal error', async () => {
    const a = await tcpEcho();
    const b = await tcpEcho();
    const dir = tempDir('zl-access-');
    const file = join(dir, 'access.log');
    const yaml = config(port(a), port(b), 'round_robin').replace(
      'log: { access: off }',
      `log: { access: ${file} }`,
    );
    const z = await spawnZipline(yaml);
    const oneConnection = async (text: string): Promise<void> => {
      const c = await dial(await z.listener('main'));
      c.end(text);
      await readAll(c);
    };
    const lines = (f: string): number => (existsSync(f) ? readFileSync(f, 'utf8').split('\n').length - 1 : 0);
    try {
      await oneConnection('before');
      await until(() => lines(file) === 1, 'the first line');
      renameSync(file, `${file}.1`); // what logrotate does
      z.proc.kill('SIGHUP');
      await z.waitForLog(/"msg":"config reloaded"/);
      await oneConnection('after');
      await until(() => lines(file) === 1, 'a line in the new file');
      assert.equal(lines(`${file}.1`), 1, 'the rotated file kept its line and got no more');
    } finally {
      await z.stop();
    }
    // /dev/full fails every write with ENOSPC: counted, reported once, the proxy goes on
    const full = await spawnZipline(
      config(port(a), port(b), 'round_robin').replace('log: { access: off }', 'log: { access: /dev/full }'),
    );
    try {
      for (let i = 0; i < 20; i++) {
        const c = await dial(await full.listener('main'));
        c.end('x');
        assert.equal((await readAll(c)).toString(), 'x');
      }
      const text = async (): Promise<string> => (await fetch(`${full.admin}metrics`)).text();
      await until(
        async () => /zipline_log_write_errors_total\{log="access"\} [1-9]/.test(await text()),
        'errors counted',
      );
      assert.match(await text(), /zipline_internal_errors_total 0/);
      await full.waitForLog(/ZL_ACCESS_LOG_WRITE/);
      // the drain gives up on the lines a full disk will not take (it used to retry them forever)
      assert.equal(await full.stop(), 0);
    } finally {
      await full.stop();
      await closeServer(a);
      await closeServer(b);
    }
  });

  test('SIGTERM drains: no new connections, open ones finish, then exit 0', async () => {
    const a: Server = await tcpEcho();
    const z = await spawnZipline(
      config(port(a), port(a) + 0, 'round_robin').replace(
        /servers: \[[^\]]+\]/,
        `servers: [127.0.0.1:${port(a)}]`,
      ),
    );
    try {
      const main = await z.listener('main');
      const open = await dial(main);
      open.write('before');
      await once(open, 'data');
      z.proc.kill('SIGTERM');
      await z.waitForLog(/"msg":"draining"/);
      await assert.rejects(dial(main), /ECONNREFUSED/, 'the listener is closed');
      open.write('during');
      const [echoed] = (await once(open, 'data')) as [Buffer];
      assert.equal(echoed.toString(), 'during', 'open connections keep working while draining');
      assert.equal(z.proc.exitCode, null, 'still running while a connection is open');
      open.end();
      await closed(open);
      assert.equal(await z.exited, 0, 'exits by itself once the last connection is gone');
    } finally {
      await closeServer(a);
    }
  });

  test("Ctrl-C under npm (SIGINT, then npm's SIGTERM) still drains; a second SIGTERM exits 1 at once", async () => {
    const a = await tcpEcho();
    const yaml = config(port(a), port(a), 'round_robin').replace(
      /servers: \[[^\]]+\]/,
      `servers: [127.0.0.1:${port(a)}]`,
    );
    try {
      const z = await spawnZipline(yaml);
      const open = await dial(await z.listener('main'));
      open.write('x');
      await once(open, 'data');
      z.proc.kill('SIGINT');
      z.proc.kill('SIGTERM'); // what `npm start` adds, right after the terminal's SIGINT
      await z.waitForLog(/"msg":"draining before exit"/);
      open.write('during');
      const [echoed] = (await Promise.race([
        once(open, 'data'),
        z.exited.then((code) => Promise.reject(new Error(`exited ${code} instead of draining`))),
      ])) as [Buffer];
      assert.equal(echoed.toString(), 'during', 'still draining: the open connection works');
      assert.equal(z.proc.exitCode, null);
      open.end();
      assert.equal(await z.exited, 0, 'a drain, not a forced exit');

      const again = await spawnZipline(yaml);
      const held = await dial(await again.listener('main'));
      held.write('x');
      await once(held, 'data');
      again.proc.kill('SIGTERM');
      await again.waitForLog(/"msg":"draining before exit"/);
      again.proc.kill('SIGTERM');
      assert.equal(await again.exited, 1, 'the same signal twice: exit now');
      held.destroy();
    } finally {
      await closeServer(a);
    }
  });

  test('drain_timeout bounds the drain: a connection that never ends is closed, exit 0', async () => {
    const a = await tcpEcho();
    const z = await spawnZipline(
      config(port(a), port(a), 'round_robin')
        .replace('drain_timeout: 10s', 'drain_timeout: 300ms')
        .replace(/servers: \[[^\]]+\]/, `servers: [127.0.0.1:${port(a)}]`),
    );
    try {
      const open = await dial(await z.listener('main'));
      // an echoed byte proves zipline accepted and connected it (the kernel completes the
      // handshake before the process accepts)
      open.write('x');
      await once(open, 'data');
      const gone = closed(open);
      const t0 = Date.now();
      z.proc.kill('SIGTERM');
      await gone;
      assert.equal(await z.exited, 0);
      assert.ok(Date.now() - t0 < 5000);
      await z.waitForLog(/"msg":"drain timeout: closing what is left"/);
    } finally {
      await closeServer(a);
    }
  });

  test('a drain asked to end sooner (Windows: the console closed) closes what is left then, not at drain_timeout', async () => {
    const a = await tcpEcho();
    const z = await startRuntime(`
drain_timeout: 30s
upstreams:
  up: { servers: [127.0.0.1:${port(a)}] }
listeners:
  - { name: main, protocol: tcp, listen: 127.0.0.1:0, upstream: up }
`);
    try {
      const open = await dial(z.addr('main'));
      open.write('x');
      await once(open, 'data');
      const gone = closed(open);
      const t0 = Date.now();
      await z.rt.drain(300);
      await gone;
      assert.ok(Date.now() - t0 < 5000, `${Date.now() - t0} ms: the 300 ms, not drain_timeout's 30 s`);
    } finally {
      await closeServer(a);
    }
  });
});
