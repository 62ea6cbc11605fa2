/**
 * `socks5` and `http_proxy` listeners (the same entries the tunnel agent runs) closing what they
 * refuse: the answer reaches the client, then the connection is closed, whether the client sent
 * far more than a handshake, never closes its side, or ends a UDP association with a FIN; and
 * `client_header: 0` means no limit, as on http listeners. A handshake that does not complete is
 * logged as what ended it, with the client's address.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { nativePump } from '../../src/l4/native-pump.js';
import {
  closeServer,
  endOf,
  port,
  RESETS_TOLD,
  resetAtOnceBlocking,
  splitAddress,
  tcpServer,
  until,
} from '../helpers/net.js';
import { type AccessLine, startRuntime } from '../helpers/zipline.js';

/**
 * A client that reads everything; `closed` once the connection is closed. `halfOpen`: it does not
 * answer zipline's FIN with its own (Node's default does), as a client that never closes.
 */
async function client(
  address: string,
  halfOpen = false,
): Promise<{ s: Socket; got: () => Buffer; closed: Promise<void> }> {
  const [host, port] = splitAddress(address);
  const s = connect({ host, port, allowHalfOpen: halfOpen });
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  s.on('error', () => {});
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  await once(s, 'connect');
  return { s, got: () => Buffer.concat(chunks), closed };
}

/** Listeners: an http_proxy (`hp`) and a socks5 (`sk`) one, with `client_header: 300ms`. */
const ENTRIES_300MS = `
listeners:
  - { name: hp, protocol: http_proxy, listen: 127.0.0.1:0, allow: ['127.0.0.1:*'], timeouts: { client_header: 300ms } }
  - { name: sk, protocol: socks5, listen: 127.0.0.1:0, allow: ['127.0.0.1:*'], timeouts: { client_header: 300ms } }`;

/** Waits for `listener`'s n-th access line (and no more), and returns it. */
async function nthLine(access: readonly AccessLine[], listener: string, n: number): Promise<AccessLine> {
  const of = (): AccessLine[] => access.filter((l) => l.listener === listener);
  await until(() => of().length === n, `${n} access lines of ${listener}`);
  return of()[n - 1] as AccessLine;
}

test('socks5 and http_proxy close what they refuse: a head far over the limit, a client that never closes, a UDP association ended by a FIN', {
  timeout: 20_000,
}, async () => {
  const z = await startRuntime(`${ENTRIES_300MS}
  - { name: sk0, protocol: socks5, listen: 127.0.0.1:0, allow: ['127.0.0.1:*'], timeouts: { client_header: 0s } }
`);
  const logged = (listener: string, n: number): Promise<AccessLine> => nthLine(z.access, listener, n);
  try {
    // 200 KB after an unfinished request line (the head limit is 16 KiB), then FIN: the answer and
    // a close. Zipline used to stop reading at the limit, so past its first read (64 KiB) it never
    // saw the FIN, and kept the connection (and its place under max_connections) for ever.
    const big = await client(z.addr('hp'));
    big.s.end(Buffer.concat([Buffer.from('CONNECT [::1 HTTP/1.1\r\n'), Buffer.alloc(200_000, 0x61)]));
    await big.closed;
    assert.match(big.got().toString('latin1'), /^HTTP\/1\.1 4\d\d .*X-Zipline-Error: ZL_PROXY_BAD_REQUEST/s);
    await logged('hp', 1);
    assert.equal(z.rt.activeCount(), 0);

    // a refused request from a client that never closes its side: closed after client_header
    const stays = await client(z.addr('hp'), true);
    const refusedHead = 'CONNECT 127.0.0.2:80 HTTP/1.1\r\nHost: 127.0.0.2:80\r\n\r\n';
    stays.s.write(refusedHead);
    await once(stays.s, 'end'); // the answer, then zipline's FIN
    assert.match(stays.got().toString('latin1'), /^HTTP\/1\.1 403 /);
    await until(() => z.rt.activeCount() === 0, 'zipline closes its side'); // before: kept for ever
    const refused = await logged('hp', 2);
    // the request and the answer are counted (they were 0: only a piped stream counted its bytes)
    assert.deepEqual([refused.bytes_in, refused.bytes_out], [refusedHead.length, stays.got().length]);
    stays.s.destroy();

    // the same over SOCKS5: reply 2 (not allowed), then closed although the client does not close
    const socks = await client(z.addr('sk'), true);
    socks.s.write(Buffer.from([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 2, 0, 80]));
    await once(socks.s, 'end');
    assert.deepEqual([...socks.got()], [5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    await until(() => z.rt.activeCount() === 0, 'zipline closes its side');
    await logged('sk', 1);
    socks.s.destroy();

    // UDP ASSOCIATE lives as long as its TCP connection (RFC 1928 §7): the client's FIN ends it.
    // The connection was left paused after the handshake, so the FIN was never read.
    const udp = await client(z.addr('sk'));
    udp.s.write(Buffer.from([5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]));
    await until(() => udp.got().length >= 12, 'the UDP ASSOCIATE reply');
    assert.deepEqual([...udp.got().subarray(0, 4)], [5, 0, 5, 0]);
    udp.s.end();
    await udp.closed;
    await logged('sk', 2);
    assert.equal(z.access.filter((l) => l.listener === 'sk')[1]?.method, 'UDP_ASSOCIATE');
    assert.equal(z.rt.activeCount(), 0);

    // client_header 0: no limit (it used to close every connection at once)
    const unlimited = await client(z.addr('sk0'));
    unlimited.s.write(Buffer.from([5, 1, 0]));
    await until(() => unlimited.got().length >= 2, 'the method selection');
    unlimited.s.write(Buffer.from([5, 1, 0, 1, 127, 0, 0, 2, 0, 80]));
    await unlimited.closed;
    assert.deepEqual([...unlimited.got().subarray(0, 4)], [5, 0, 5, 2], 'the request answered too');
  } finally {
    await z.stop();
  }
});

test('a destination that resets resets the client, through CONNECT and SOCKS5: an RST is passed on as an RST, never a FIN', {
  skip: RESETS_TOLD ? false : 'telling an RST from a FIN needs the native addon',
}, async () => {
  // once the client talks, one resets with its last bytes (libuv reports that as a plain end),
  // the other with nothing more to send
  const atOnce = await tcpServer((s) => {
    s.once('data', () => {
      s.write('bye');
      s.resetAndDestroy();
    });
  });
  const later = await tcpServer((s) => {
    s.write('hello');
    s.once('data', () => s.resetAndDestroy());
  });
  const z = await startRuntime(`
listeners:
  - { name: hp, protocol: http_proxy, listen: 127.0.0.1:0, allow: ['127.0.0.1:*'] }
  - { name: sk, protocol: socks5, listen: 127.0.0.1:0, allow: ['127.0.0.1:*'] }
`);
  try {
    for (const dest of [atOnce, later]) {
      const p = port(dest);
      const viaConnect = await client(z.addr('hp'));
      const end1 = endOf(viaConnect.s);
      viaConnect.s.write(`CONNECT 127.0.0.1:${p} HTTP/1.1\r\nHost: 127.0.0.1:${p}\r\n\r\n`);
      await until(() => viaConnect.got().includes('\r\n\r\n'), 'the CONNECT answer');
      viaConnect.s.write('talk');
      assert.equal((await end1).kind, 'reset', `CONNECT to ${p}`);

      const viaSocks = await client(z.addr('sk'));
      const end2 = endOf(viaSocks.s);
      viaSocks.s.write(Buffer.from([5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, p >> 8, p & 255]));
      await until(() => viaSocks.got().length >= 12, 'the SOCKS5 reply');
      viaSocks.s.write('talk');
      assert.equal((await end2).kind, 'reset', `SOCKS5 to ${p}`);
    }
    await until(() => z.rt.activeCount() === 0, 'every connection closed');
  } finally {
    await z.stop();
    await closeServer(atOnce);
    await closeServer(later);
  }
});

test('a handshake that does not complete is logged as what ended it: the client FIN 499 ZL_CLIENT_ABORTED, its RST 499 ZL_CLIENT_RESET, client_header 408 ZL_HTTP_HEADER_TIMEOUT', {
  timeout: 20_000,
}, async () => {
  const z = await startRuntime(ENTRIES_300MS);
  /** The n-th line's status, code, and bytes from and to the client (its handshake and answer). */
  const lineOf = async (listener: string, n: number): Promise<unknown[]> => {
    const line = await nthLine(z.access, listener, n);
    return [line.status, line.error, line.bytes_in, line.bytes_out];
  };
  try {
    for (const [name, partial] of [
      ['hp', 'CONNECT 127.0.0.1'],
      ['sk', '\u0005'],
    ] as const) {
      // a FIN before the handshake is complete, with part of it sent, then with nothing
      const fin = await client(z.addr(name));
      fin.s.end(partial, 'latin1');
      await fin.closed;
      assert.deepEqual(await lineOf(name, 1), [499, 'ZL_CLIENT_ABORTED', partial.length, 0], `${name}: FIN`);
      const empty = await client(z.addr(name));
      empty.s.end();
      await empty.closed;
      assert.deepEqual(await lineOf(name, 2), [499, 'ZL_CLIENT_ABORTED', 0, 0], `${name}: FIN, no byte`);
      // an RST (before: 400 and ZL_PROXY_BAD_REQUEST, or status 0 from the HTTP proxy)
      const rst = await client(z.addr(name));
      rst.s.resetAndDestroy();
      assert.deepEqual(await lineOf(name, 3), [499, 'ZL_CLIENT_RESET', 0, 0], `${name}: RST`);
      // silence past client_header: closed (the HTTP proxy answers 408 first)
      const quiet = await client(z.addr(name));
      await quiet.closed;
      const answered = quiet.got().length;
      assert.deepEqual(
        await lineOf(name, 4),
        [408, 'ZL_HTTP_HEADER_TIMEOUT', 0, answered],
        `${name}: timeout`,
      );
      if (name === 'hp') assert.match(quiet.got().toString('latin1'), /^HTTP\/1\.1 408 /);
      else assert.equal(quiet.got().length, 0);
    }
    await until(() => z.rt.activeCount() === 0, 'every connection closed');
  } finally {
    await z.stop();
  }
});

test('socks5 and http_proxy clients that reset at once are logged with their address (the native acceptor: accept4 gives it)', {
  skip: nativePump.available ? false : 'the native acceptor (Linux, addon built)',
}, async () => {
  const z = await startRuntime(ENTRIES_300MS);
  try {
    for (const name of ['hp', 'sk']) {
      const [host, p] = splitAddress(z.addr(name));
      const ports = resetAtOnceBlocking(host, p, 10);
      await until(() => z.access.filter((l) => l.listener === name).length === 10, `${name}: access lines`);
      const lines = z.access.filter((l) => l.listener === name);
      assert.deepEqual(
        lines.map((l) => l.client_ip),
        ports.map(() => '127.0.0.1'),
      );
      assert.deepEqual(
        lines.map((l) => Number(l.client_port)).sort((a, b) => a - b),
        ports,
      );
      for (const l of lines) assert.deepEqual([l.status, l.error], [499, 'ZL_CLIENT_RESET']);
    }
  } finally {
    await z.stop();
  }
});

test('an IPv6 destination is written [addr]:port in the access line, for SOCKS5 and CONNECT alike', async () => {
  const z = await startRuntime(ENTRIES_300MS);
  try {
    // [::1] is not on allow (127.0.0.1:* is): refused, and logged as what was asked
    const sk = await client(z.addr('sk'));
    sk.s.write(Buffer.from([5, 1, 0]));
    sk.s.write(Buffer.concat([Buffer.from([5, 1, 0, 4]), Buffer.alloc(15), Buffer.from([1, 0x1f, 0x90])]));
    await sk.closed;
    const hp = await client(z.addr('hp'));
    hp.s.write('CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n');
    await hp.closed;
    for (const name of ['sk', 'hp']) {
      const line = await nthLine(z.access, name, 1);
      assert.equal(line.status, 403, name);
      assert.equal(line.path, '[::1]:8080', name);
      assert.equal(line.upstream_addr, '[::1]:8080', name);
    }
  } finally {
    await z.stop();
  }
});
