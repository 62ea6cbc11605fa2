/** The UDP proxy on real loopback sockets. */
import assert from 'node:assert/strict';
import type { Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { nativePump } from '../../src/l4/native-pump.js';
import { have, run, startDnsmasq } from '../helpers/daemons.js';
import { port, splitAddress, udpClient, udpEcho, unreachableUdpPort, until } from '../helpers/net.js';
import { tempDir } from '../helpers/temp.js';
import { startRuntime } from '../helpers/zipline.js';

const sockets: UdpSocket[] = [];
after(() => {
  for (const s of sockets) s.close();
});

async function echo(): Promise<UdpSocket> {
  const s = await udpEcho();
  sockets.push(s);
  return s;
}
async function client(): Promise<UdpSocket> {
  const s = await udpClient();
  sockets.push(s);
  return s;
}

let native: 'auto' | 'off' = 'auto';

function config(servers: string[], udp: string): string {
  return `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 2s
upstreams:
  dns: { servers: [${servers.join(', ')}] }
listeners:
  - { name: u, protocol: udp, listen: 127.0.0.1:0, upstream: dns, native: ${native}, udp: ${udp} }
`;
}

async function sessionLimitDrops(admin: string): Promise<number> {
  const text = await (await fetch(`${admin}metrics`)).text();
  const m = /zipline_udp_dropped_total\{listener="u",code="ZL_UDP_SESSION_LIMIT"\} (\d+)/.exec(text);
  return m ? Number(m[1]) : 0;
}

async function ask(c: UdpSocket, to: string, msg: string): Promise<string> {
  const [host, p] = splitAddress(to);
  c.send(msg, p, host);
  const [reply] = (await once(c, 'message')) as [Buffer];
  return reply.toString();
}

// One suite, both data paths: the native relay (Linux, when built) and the JavaScript one.
for (const mode of ['auto', 'off'] as const) {
  describe(`udp proxy (native: ${mode})`, () => {
    before(() => {
      native = mode;
    });

    test('request/response; responses: 1 ends the session after one reply', async () => {
      const e = await echo();
      const z = await startRuntime(config([`127.0.0.1:${port(e)}`], '{ responses: 1, idle_timeout: 30s }'));
      try {
        const c = await client();
        assert.equal(await ask(c, z.addr('u'), 'q1'), 'q1');
        await until(() => z.access.length === 1, 'session to end after one response');
        assert.equal(z.access[0]?.close, 'responses');
        assert.equal(z.access[0]?.datagrams_out, 1);
        assert.equal(z.access[0]?.data_path, mode === 'auto' && nativePump.available ? 'native' : 'js');
        assert.equal(await ask(c, z.addr('u'), 'q2'), 'q2', 'a new session for the next query');
        await until(() => z.access.length === 2, 'second session to end');
      } finally {
        await z.stop();
      }
    });

    test('responses: 1 is per datagram: two queries sent at once from one port (A and AAAA) both get their answer', async () => {
      const e = await echo();
      const z = await startRuntime(config([`127.0.0.1:${port(e)}`], '{ responses: 1, idle_timeout: 30s }'));
      try {
        const c = await client();
        const got: string[] = [];
        c.on('message', (m: Buffer) => got.push(m.toString()));
        const [host, p] = splitAddress(z.addr('u'));
        c.send('a', p, host);
        c.send('aaaa', p, host);
        await until(() => got.length === 2, 'both answers', 3000);
        assert.deepEqual(got.sort(), ['a', 'aaaa']);
        await until(() => z.access.length === 1, 'the session to end after its two answers');
        assert.equal(z.access[0]?.close, 'responses');
        assert.equal(z.access[0]?.datagrams_in, 2);
        assert.equal(z.access[0]?.datagrams_out, 2);
      } finally {
        await z.stop();
      }
    });

    test("receive_buffer sets the listening socket's SO_RCVBUF (4MiB by default, capped by rmem_max); 0 keeps the kernel default", {
      skip: have('ss') ? false : 'ss (iproute2) reads the socket buffer',
    }, async () => {
      const e = await echo();
      // `ss -uamn` shows the buffer as the kernel keeps it: twice what was asked, at most rmem_max
      const rb = async (address: string): Promise<number> => {
        const out = await run('ss', ['-uamn', `sport = :${splitAddress(address)[1]}`]);
        return Number(/skmem:\(r\d+,rb(\d+)/.exec(out.stdout)?.[1] ?? -1);
      };
      const rmemMax = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
      const rmemDefault = Number(readFileSync('/proc/sys/net/core/rmem_default', 'utf8'));
      for (const [udp, want] of [
        ['{}', 2 * Math.min(4 * 1024 * 1024, rmemMax)],
        ['{ receive_buffer: 0 }', rmemDefault],
        ['{ receive_buffer: 64KiB }', 2 * Math.min(64 * 1024, rmemMax)],
      ] as const) {
        const z = await startRuntime(config([`127.0.0.1:${port(e)}`], udp));
        try {
          assert.equal(await rb(z.addr('u')), want, udp);
        } finally {
          await z.stop();
        }
      }
    });

    test('datagrams the kernel drops on a full receive buffer are counted (ZL_UDP_RECEIVE_BUFFER_FULL)', {
      skip: process.platform === 'linux' ? false : '/proc/net/udp (Linux)',
    }, async () => {
      const e = await echo();
      // the smallest buffer the kernel keeps (a few datagrams): a burst of 3,000 overflows it
      const z = await startRuntime(config([`127.0.0.1:${port(e)}`], '{ receive_buffer: 1 }'));
      try {
        const c = await client();
        const [host, p] = splitAddress(z.addr('u'));
        const dropped = async (): Promise<number> => {
          const text = await (await fetch(`${z.rt.admin.url()}metrics`)).text();
          const m = /zipline_udp_dropped_total\{listener="u",code="ZL_UDP_RECEIVE_BUFFER_FULL"\} (\d+)/.exec(
            text,
          );
          return m ? Number(m[1]) : 0;
        };
        // the series is the process's (the listener name repeats across these tests): a delta
        const before = await dropped();
        for (let i = 0; i < 3000; i++) c.send('x'.repeat(100), p, host);
        const n =
          (await until(async () => ((await dropped()) > before ? dropped() : 0), 'kernel drops counted')) -
          before;
        assert.ok(n > 0 && n < 3000, `${n} dropped`);
      } finally {
        await z.stop();
      }
    });

    test('dig through the proxy to dnsmasq: 50 lookups answered, one session each (responses: 1), and over TCP too', {
      skip: have('dig') && have('dnsmasq') ? false : 'dig or dnsmasq not installed',
    }, async () => {
      const dns = await startDnsmasq('zipline.test', '10.9.8.7');
      const z =
        await startRuntime(`${config([`127.0.0.1:${dns.port}`], '{ responses: 1 }')}  - { name: t, protocol: tcp, listen: 127.0.0.1:0, upstream: dns }
`);
      try {
        // one dig process asks all 50 in turn (`-f`), each from a socket of its own: 50 processes
        // forked at once from this test's event loop, which also serves the proxy, held it for
        // seconds on a loaded machine (lookups then timed out)
        const dig = (listener: string, args: string[]): Promise<string> => {
          const [host, p] = splitAddress(z.addr(listener));
          const common = ['+short', '+tries=1', '+time=5', `@${host}`, '-p', String(p)];
          return run('dig', [...common, ...args]).then((r) => r.stdout.trim());
        };
        const names = join(tempDir('zl-dig-'), 'names');
        writeFileSync(names, Array.from({ length: 50 }, (_, i) => `n${i}.zipline.test\n`).join(''));
        const answers = (await dig('u', ['-f', names])).split('\n');
        assert.deepEqual(answers, Array(50).fill('10.9.8.7'));
        await until(() => z.access.filter((l) => l.listener === 'u').length === 50, 'a line per lookup');
        assert.ok(
          z.access.every((l) => l.listener !== 'u' || (l.datagrams_in === 1 && l.datagrams_out === 1)),
        );
        assert.equal(await dig('t', ['+tcp', 'tcp.zipline.test']), '10.9.8.7');
      } finally {
        await z.stop();
        dns.stop();
      }
    });

    test('idle sessions expire', async () => {
      const e = await echo();
      const z = await startRuntime(config([`127.0.0.1:${port(e)}`], '{ idle_timeout: 200ms }'));
      try {
        const c = await client();
        assert.equal(await ask(c, z.addr('u'), 'hi'), 'hi');
        assert.equal(z.rt.listeners.get('u')?.activeCount(), 1);
        const t0 = Date.now();
        await until(() => z.access.length === 1, 'idle expiry', 5000);
        assert.ok(Date.now() - t0 >= 100);
        assert.equal(z.access[0]?.close, 'idle');
        assert.equal(z.rt.listeners.get('u')?.activeCount(), 0);
      } finally {
        await z.stop();
      }
    });

    test('10,000 datagrams at a moderate rate arrive with no loss and in order', async () => {
      const e = await echo();
      const z = await startRuntime(config([`127.0.0.1:${port(e)}`], '{ idle_timeout: 30s }'));
      try {
        const c = await client();
        const [host, p] = splitAddress(z.addr('u'));
        const total = 10_000;
        const window = 32; // at most this many in flight: a moderate rate, no buffer overruns
        const received: number[] = [];
        let sent = 0;
        await new Promise<void>((resolve) => {
          const send = (): void => {
            while (sent < total && sent - received.length < window) {
              const b = Buffer.alloc(64);
              b.writeUInt32BE(sent++, 0);
              c.send(b, p, host);
            }
          };
          c.on('message', (m: Buffer) => {
            received.push(m.readUInt32BE(0));
            if (received.length === total) resolve();
            else send();
          });
          send();
        });
        for (let i = 0; i < total; i++) assert.equal(received[i], i, `datagram ${i} out of order`);
        assert.equal(z.rt.listeners.get('u')?.activeCount(), 1, 'one session for one client');
      } finally {
        await z.stop();
      }
    });

    test('sessions are balanced per client; the session cap drops (and counts) the excess', async () => {
      const a = await echo();
      const b = await echo();
      const z = await startRuntime(
        config([`127.0.0.1:${port(a)}`, `127.0.0.1:${port(b)}`], '{ idle_timeout: 30s, max_sessions: 2 }'),
      );
      try {
        const c1 = await client();
        const c2 = await client();
        const c3 = await client();
        assert.equal(await ask(c1, z.addr('u'), 'x'), 'x');
        assert.equal(await ask(c2, z.addr('u'), 'y'), 'y');
        const up = z.rt.upstreams.get('dns');
        assert.deepEqual(
          up?.endpoints.map((e) => e.total),
          [1, 1],
          'round robin per session',
        );
        const [host, p] = splitAddress(z.addr('u'));
        const dropsBefore = await sessionLimitDrops(z.rt.admin.url());
        c3.send('z', p, host);
        // counters kept off the per-datagram path are brought up to date at scrape time; the
        // registry is per process, so compare with the value before this datagram
        await until(
          async () => (await sessionLimitDrops(z.rt.admin.url())) > dropsBefore,
          'drop counted in /metrics',
        );
        assert.equal(z.rt.listeners.get('u')?.activeCount(), 2);
      } finally {
        await z.stop();
      }
    });
  });

  describe(`udp proxy faults (native: ${mode})`, () => {
    before(() => {
      native = mode;
    });

    test('drain: a session still open at drain_timeout is ended and logged before drain resolves', async () => {
      const e = await echo();
      const z = await startRuntime(
        config([`127.0.0.1:${port(e)}`], '{ idle_timeout: 30s }').replace(
          'drain_timeout: 2s',
          'drain_timeout: 200ms',
        ),
      );
      const c = await client();
      assert.equal(await ask(c, z.addr('u'), 'still here'), 'still here');
      await z.stop();
      assert.equal(z.access.length, 1, 'the session was logged before drain() resolved');
      assert.equal(z.access[0]?.close, 'drain');
      assert.equal(z.access[0]?.error, 'ZL_DRAIN_TIMEOUT');
      assert.equal(z.access[0]?.status, 503);
      assert.equal(z.rt.activeCount(), 0);
    });

    test('ICMP port unreachable from the server ends the session with a coded error', async () => {
      const dead = await unreachableUdpPort();
      const z = await startRuntime(config([`127.0.0.1:${dead.port}`], '{ idle_timeout: 30s }'));
      try {
        const c = await client();
        const [host, p] = splitAddress(z.addr('u'));
        c.send('anyone?', p, host);
        await until(() => z.access.length === 1, 'the session to end on ICMP unreachable');
        assert.equal(z.access[0]?.error, 'ZL_UPSTREAM_CONNECT_REFUSED');
        assert.equal(z.access[0]?.status, 502);
        assert.equal(z.access[0]?.close, 'error');
        assert.equal(z.rt.listeners.get('u')?.activeCount(), 0);
      } finally {
        await z.stop();
        dead.release();
      }
    });
  });
}
