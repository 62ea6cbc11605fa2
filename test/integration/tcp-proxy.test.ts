/** The TCP proxy on real loopback sockets, against fake upstreams that behave and misbehave. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { Server, Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { nativePump } from '../../src/l4/native-pump.js';
import { have, run, startRedis } from '../helpers/daemons.js';
import {
  closed,
  closeServer,
  dial,
  endOf,
  kernelTcpBufferMax,
  openFds,
  port,
  RESETS_TOLD,
  readAll,
  refusedPort,
  resetAtOnceBlocking,
  splitAddress,
  tcpEcho,
  tcpServer,
  until,
} from '../helpers/net.js';
import { startRuntime } from '../helpers/zipline.js';

const servers: Server[] = [];
after(async () => {
  for (const s of servers) await closeServer(s);
});
async function keep(s: Promise<Server>): Promise<Server> {
  const server = await s;
  servers.push(server);
  return server;
}

let native: 'auto' | 'off' = 'auto';

function config(upstreamServers: string[], extra = '', listenerExtra = ''): string {
  return `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 5s
upstreams:
  up:
    servers: [${upstreamServers.join(', ')}]
    retry: { attempts: 2, backoff: { base: 5ms, max: 20ms } }
${extra}
listeners:
  - { name: t, protocol: tcp, listen: 127.0.0.1:0, upstream: up, native: ${native} ${listenerExtra} }
`;
}

// One suite, both data paths: the native splice pump (Linux, when built) and the JavaScript pump.
for (const mode of ['auto', 'off'] as const) {
  describe(`tcp proxy (native: ${mode})`, () => {
    before(() => {
      native = mode;
    });

    test('echo through the proxy, one access line per connection', async () => {
      const echo = await keep(tcpEcho());
      const z = await startRuntime(config([`127.0.0.1:${port(echo)}`]));
      try {
        const c = await dial(z.addr('t'));
        c.end('hello zipline');
        assert.equal((await readAll(c)).toString(), 'hello zipline');
        await until(() => z.access.length === 1, 'access log line');
        const line = z.access[0] as Record<string, unknown>;
        assert.equal(line.listener, 't');
        assert.equal(line.client_ip, '127.0.0.1');
        assert.equal(line.upstream_addr, `127.0.0.1:${port(echo)}`);
        assert.equal(line.bytes_in, 13);
        assert.equal(line.bytes_out, 13);
        assert.equal(line.status, 200);
        assert.equal(line.error, null);
        assert.equal(typeof line.response_time, 'number');
        assert.equal(line.data_path, mode === 'auto' && nativePump.available ? 'native' : 'js');
      } finally {
        await z.stop();
      }
    });

    test('half-close: the client shuts down its side and still receives the reply', async () => {
      // the server answers only after the client's FIN, then closes
      const srv = await keep(
        tcpServer((s) => {
          const chunks: Buffer[] = [];
          s.on('data', (d: Buffer) => chunks.push(d));
          s.on('end', () => s.end(`got ${Buffer.concat(chunks).length} bytes`));
        }),
      );
      const z = await startRuntime(config([`127.0.0.1:${port(srv)}`]));
      try {
        const c = await dial(z.addr('t'));
        c.write(Buffer.alloc(100_000, 7));
        c.end(); // shutdown(SHUT_WR)
        assert.equal((await readAll(c)).toString(), 'got 100000 bytes');
      } finally {
        await z.stop();
      }
    });

    test('a refusing server: every connection succeeds, it is marked down after max_fails and retried after fail_timeout', async () => {
      const echo = await keep(tcpEcho());
      const dead = await refusedPort();
      // fail_timeout outlasts the 20 connections below even on a loaded machine (at 400 ms a
      // slow run saw the dead server come back mid-loop and counted a third failure)
      const z = await startRuntime(
        config([
          `{ address: 127.0.0.1:${dead}, max_fails: 2, fail_timeout: 1500ms }`,
          `127.0.0.1:${port(echo)}`,
        ]),
      );
      try {
        const up = z.rt.upstreams.get('up');
        assert.ok(up);
        const deadEp = up.endpoints.find((e) => e.port === dead);
        assert.ok(deadEp);
        for (let i = 0; i < 20; i++) {
          const c = await dial(z.addr('t'));
          c.end(`msg ${i}`);
          assert.equal((await readAll(c)).toString(), `msg ${i}`);
        }
        // round robin alternates, so the dead one was tried until max_fails (2) marked it down
        assert.equal(deadEp.failures, 2, 'tried exactly max_fails times, then skipped');
        assert.equal(deadEp.state(Date.now()), 'down');
        const retriedAt = deadEp.downUntil;
        await until(() => Date.now() >= retriedAt, 'fail_timeout to pass', 3000);
        const c = await dial(z.addr('t'));
        c.end('after');
        assert.equal((await readAll(c)).toString(), 'after');
        assert.ok(deadEp.failures >= 2);
        // one connection after fail_timeout either probes the dead server (3 failures, down again) or
        // goes to the live one by rotation; drive until the probe happened
        for (let i = 0; i < 4 && deadEp.failures === 2; i++) {
          const d = await dial(z.addr('t'));
          d.end('x');
          await readAll(d);
        }
        assert.equal(deadEp.failures, 3, 'retried once after fail_timeout');
        assert.equal(deadEp.state(Date.now()), 'down', 'a failed probe marks it down again');
        const lines = z.access.filter((l) => l.status === 200);
        assert.ok(lines.length >= 21);
        assert.ok(
          z.access.some((l) => l.attempts === 2),
          'some connections needed a second attempt',
        );
      } finally {
        await z.stop();
      }
    });

    test('all servers refusing: the client is closed, coded error in the access log', async () => {
      const dead = await refusedPort();
      const z = await startRuntime(config([`127.0.0.1:${dead}`]));
      try {
        const c = await dial(z.addr('t'));
        await closed(c);
        await until(() => z.access.length === 1, 'access line');
        assert.equal(z.access[0]?.error, 'ZL_UPSTREAM_CONNECT_REFUSED');
        assert.equal(z.access[0]?.status, 502);
        assert.equal(z.access[0]?.attempts, 3, '1 + retry.attempts');
      } finally {
        await z.stop();
      }
    });

    test('an upstream that resets mid-stream resets the client', async () => {
      const srv = await keep(
        tcpServer((s) => {
          // answer, then reset while the client is talking (a reset with nothing queued to send)
          s.once('data', () => {
            s.write('partial');
            s.once('data', () => s.resetAndDestroy());
          });
        }),
      );
      const z = await startRuntime(config([`127.0.0.1:${port(srv)}`]));
      try {
        const c = await dial(z.addr('t'));
        const received: Buffer[] = [];
        c.on('data', (d: Buffer) => {
          received.push(d);
          c.write('more');
        });
        c.write('go');
        const err = await closed(c);
        assert.equal(err?.code, 'ECONNRESET');
        assert.equal(Buffer.concat(received).toString(), 'partial');
        await until(() => z.access.length === 1, 'access line');
        assert.equal(z.access[0]?.error, 'ZL_UPSTREAM_RESET');
      } finally {
        await z.stop();
      }
    });

    test('an upstream that resets right after its last bytes resets the client (an RST, never a FIN)', {
      skip: RESETS_TOLD ? false : 'telling an RST from a FIN needs the native addon',
    }, async () => {
      // libuv reports an RST that comes with the last bytes as a plain end, as it does a FIN
      const srv = await keep(
        tcpServer((s) => {
          s.once('data', () => {
            s.write('last words');
            s.resetAndDestroy();
          });
        }),
      );
      const z = await startRuntime(config([`127.0.0.1:${port(srv)}`]));
      try {
        for (let i = 0; i < 5; i++) {
          const c = await dial(z.addr('t'));
          const end = endOf(c);
          c.write('go');
          assert.equal((await end).kind, 'reset', `connection ${i}`);
        }
        await until(() => z.access.length === 5, 'access lines');
        for (const a of z.access) assert.equal(a.error, 'ZL_UPSTREAM_RESET');
      } finally {
        await z.stop();
      }
    });

    test('a client reset is propagated to the upstream as a reset', async () => {
      let upstreamErr: Promise<NodeJS.ErrnoException | null> | undefined;
      let dataArrived: () => void = () => {};
      const gotData = new Promise<void>((r) => {
        dataArrived = r;
      });
      const srv = await keep(
        tcpServer((s) => {
          upstreamErr = closed(s);
          s.once('data', () => dataArrived());
        }),
      );
      const z = await startRuntime(config([`127.0.0.1:${port(srv)}`]));
      try {
        const c = await dial(z.addr('t'));
        c.write('x');
        await gotData;
        c.resetAndDestroy();
        const err = await upstreamErr;
        assert.equal(err?.code, 'ECONNRESET');
        await until(() => z.access.length === 1, 'access line');
        assert.equal(z.access[0]?.error, 'ZL_CLIENT_RESET');
      } finally {
        await z.stop();
      }
    });

    test('clients that reset at once are logged with their address (accept4 gives it; getpeername then fails)', {
      skip: mode === 'off' || !nativePump.available ? 'the native acceptor (Linux, addon built)' : false,
    }, async () => {
      const echo = await keep(tcpEcho());
      const z = await startRuntime(config([`127.0.0.1:${port(echo)}`]));
      try {
        const [host, p] = splitAddress(z.addr('t'));
        const ports = resetAtOnceBlocking(host, p, 20); // native-accepted, reset before JavaScript ran
        await until(() => z.access.length === 20, 'access lines');
        assert.deepEqual(
          z.access.map((a) => a.client_ip),
          ports.map(() => '127.0.0.1'),
        );
        assert.deepEqual(
          z.access.map((a) => Number(a.client_port)).sort((a, b) => a - b),
          ports,
        );
        for (const a of z.access) assert.equal(a.error, 'ZL_CLIENT_RESET');
      } finally {
        await z.stop();
      }
    });

    test('a client that sends nothing is closed at the idle timeout', async () => {
      const echo = await keep(tcpEcho());
      const z = await startRuntime(
        config([`127.0.0.1:${port(echo)}`], '', ', timeouts: { client_idle: 300ms }'),
      );
      try {
        const c = await dial(z.addr('t'));
        const t0 = Date.now();
        await closed(c);
        const took = Date.now() - t0;
        assert.ok(took >= 250 && took < 3000, `closed after ${took} ms`);
        await until(() => z.access.length === 1, 'access line');
        assert.equal(z.access[0]?.error, 'ZL_CLIENT_IDLE_TIMEOUT');
      } finally {
        await z.stop();
      }
    });

    test('a client that reads nothing is reset at the idle timeout, so what waits for it is dropped', async () => {
      const chunk = Buffer.alloc(64 * 1024, 1);
      const srv = await keep(
        tcpServer((s) => {
          s.on('error', () => {});
          const pump = (): void => {
            while (!s.destroyed && s.write(chunk));
            if (!s.destroyed) s.once('drain', pump);
          };
          pump();
        }),
      );
      const z = await startRuntime(
        config([`127.0.0.1:${port(srv)}`], '', ', timeouts: { client_idle: 300ms }'),
      );
      try {
        const c = await dial(z.addr('t'));
        c.pause();
        let received = 0;
        c.on('data', (d: Buffer) => {
          received += d.length;
        });
        c.on('error', () => {});
        await until(() => z.access.length === 1, 'closed at the idle timeout', 5000);
        const line = z.access[0];
        assert.equal(line?.error, 'ZL_CLIENT_IDLE_TIMEOUT');
        // closed with a FIN, the client would still receive all of it from zipline's kernel buffers
        c.resume();
        await until(() => c.readableEnded || c.closed, 'the end of what the client can read');
        const sent = Number(line?.bytes_out);
        assert.ok(sent > 1e6 && received < sent / 2, `received ${received} of ${sent} bytes`);
      } finally {
        await z.stop();
      }
    });

    test('backpressure: a client that does not read keeps proxy memory bounded', async () => {
      // Between origin and client sit two loopback hops whose kernel buffers autotune (up to 72 MiB
      // with tcp_rmem max 32 MiB); the proxy may add at most a few MiB on top (the splice pump
      // holds one 256 KiB pipe per direction). Push far more than that, so an unbounded proxy
      // shows.
      const bound = 2 * kernelTcpBufferMax() + 4 * 1024 * 1024;
      const total = Math.max(256 * 1024 * 1024, 2 * bound);
      let written = 0;
      const srv = await keep(
        tcpServer((s) => {
          const chunk = Buffer.alloc(64 * 1024, 1);
          const pump = (): void => {
            while (written < total) {
              written += chunk.length;
              if (!s.write(chunk)) return void s.once('drain', pump);
            }
            s.end();
          };
          pump();
        }),
      );
      const z = await startRuntime(config([`127.0.0.1:${port(srv)}`]));
      try {
        const c = await dial(z.addr('t'));
        c.pause();
        // wait until the origin is blocked by backpressure: written stops growing
        let last = -1;
        await until(
          () => {
            const stable = written === last && written > 0;
            last = written;
            return stable;
          },
          'origin blocked',
          10_000,
          100,
        );
        assert.ok(
          written <= bound,
          `origin pushed ${written} bytes into a non-reading client (bound ${bound})`,
        );
        let got = 0;
        c.on('data', (d: Buffer) => {
          got += d.length;
        });
        c.resume();
        await once(c, 'end');
        c.end();
        assert.equal(got, total);
      } finally {
        await z.stop();
      }
    });

    test('10,000 connect/reset cycles leave open file descriptors where they started', async () => {
      const echo = await keep(tcpEcho());
      const z = await startRuntime(config([`127.0.0.1:${port(echo)}`]));
      try {
        // warm up: lazily created handles (timers, DNS, loggers) do not count as leaks
        for (let i = 0; i < 20; i++) {
          const c = await dial(z.addr('t'));
          c.end('w');
          await readAll(c);
        }
        await until(() => z.rt.activeCount() === 0, 'warm-up connections to close');
        const before = openFds();
        const cycles = 10_000;
        const concurrency = 50;
        let next = 0;
        const worker = async (): Promise<void> => {
          while (next < cycles) {
            const i = next++;
            const c = await dial(z.addr('t'));
            const done = closed(c);
            if (i % 2 === 0) c.resetAndDestroy();
            else {
              c.write('ping');
              await once(c, 'data');
              c.resetAndDestroy();
            }
            await done;
          }
        };
        await Promise.all(Array.from({ length: concurrency }, worker));
        await until(() => z.rt.activeCount() === 0, 'every proxied connection to close');
        await until(() => (z.rt.upstreams.get('up')?.active ?? -1) === 0, 'upstream counters back to 0');
        await until(() => openFds() <= before, `fds back to ${before} (now ${openFds()})`, 5000);
      } finally {
        await z.stop();
      }
    });

    test('redis-cli and redis-benchmark through the proxy to redis-server', {
      skip:
        have('redis-server') && have('redis-cli') && have('redis-benchmark')
          ? false
          : 'redis-server, redis-cli and redis-benchmark are needed (apt-get install redis-server redis-tools)',
    }, async () => {
      const redis = await startRedis();
      const z = await startRuntime(config([`127.0.0.1:${redis.port}`]));
      try {
        const [h, p] = splitAddress(z.addr('t'));
        const cli = (args: string[], input?: Buffer) =>
          run('redis-cli', ['-h', h, '-p', String(p), ...args], input === undefined ? {} : { input });
        assert.equal((await cli(['PING'])).stdout.trim(), 'PONG');
        // a 4 MiB value up (-x: the last argument from stdin) and back, byte for byte
        const value = randomBytes(3 << 20).toString('base64');
        assert.equal((await cli(['-x', 'SET', 'big'], Buffer.from(value))).stdout.trim(), 'OK');
        const got = (await cli(['GET', 'big'])).stdout.replace(/\n$/, '');
        assert.equal(got.length, value.length);
        assert.ok(got === value, 'the value came back intact');
        // 50 clients, 16 commands pipelined per write: every one answered
        const bench = await run('redis-benchmark', [
          '-h',
          h,
          '-p',
          String(p),
          '-q',
          '-n',
          '20000',
          '-c',
          '50',
          '-P',
          '16',
          '-t',
          'incr',
        ]);
        assert.equal(bench.code, 0, bench.stderr);
        assert.equal((await cli(['GET', 'counter:__rand_int__'])).stdout.trim(), '20000');
        await until(() => z.rt.activeCount() === 0, 'every proxied connection closed');
      } finally {
        await z.stop();
        redis.stop();
      }
    });
  });
}

export type { Socket };

test('the native splice pump is built and used on Linux (ZIPLINE_NO_NATIVE=1 turns it off)', () => {
  if (process.platform !== 'linux' || process.env.ZIPLINE_NO_NATIVE === '1') {
    assert.equal(nativePump.available, false);
    return;
  }
  assert.equal(nativePump.available, true, 'npm install should have built build/Release/zipline_pump.node');
});
