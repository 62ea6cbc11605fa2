/**
 * zipline's shared-memory bridge with real C processes and real HTTP clients: curl reads what C
 * wrote and C reads what curl posted; ETag/304/204/412/413; a writer killed holding the lock
 * does not stop the next POST; C → Node messages over SSE with Last-Event-ID replay; Node → C
 * messages; long-poll and the snapshot stream; a C peer that writes outside the protocol;
 * `zipline shm` commands.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, renameSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import type { Runtime } from '../../src/core/runtime.js';
import { metrics } from '../../src/metrics/catalog.js';
import type { ShmBridges } from '../../src/shm/bridges.js';
import { loadShm } from '../../src/shm/native.js';
import { fillToCap, parseResponse, rawRequest } from '../helpers/http.js';
import { seriesValue } from '../helpers/metrics.js';
import { dial, readAll, splitAddress, until } from '../helpers/net.js';
import { buildShmTools, type ShmTools } from '../helpers/shm.js';
import { tempDir } from '../helpers/temp.js';
import { runCli, spawnZipline, startRuntime } from '../helpers/zipline.js';

const linux = process.platform === 'linux' && existsSync('/dev/shm');
let tools: ShmTools | undefined;
const t = (): ShmTools => tools as ShmTools;
/** The runtime's shm bridges (loaded when its config has any). */
function bridgesOf(z: { rt: Runtime }): ShmBridges {
  assert.ok(z.rt.shm, 'the runtime started its shm bridges');
  return z.rt.shm;
}

function curl(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', ...args], (err, stdout) =>
      resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? 1), out: stdout }),
    );
  });
}

function yaml(segment: string, extra = ''): string {
  return `
admin: { listen: 127.0.0.1:0 }
shm:
  - { name: tele, segment: ${segment}, snapshot_capacity: 4KiB, slots: 64, slot_size: 128, http: 127.0.0.1:0, remove_on_exit: true }
${extra}`;
}

/** Reads Server-Sent Events until `count` events arrived; returns them. */
function sse(
  url: string,
  count: number,
  headers: Record<string, string> = {},
): Promise<{ id: string; event: string; data: string }[]> {
  return new Promise((resolve, reject) => {
    const events: { id: string; event: string; data: string }[] = [];
    // a stream that never brings them fails the test instead of holding it
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`${url}: ${events.length} of ${count} events within 10 s`));
    }, 10_000);
    const req = request(url, { headers }, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let i = buf.indexOf('\n\n');
        while (i >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const ev = { id: '', event: 'message', data: '' };
          let has = false;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const [k, ...rest] = line.split(': ');
            const v = rest.join(': ');
            if (k === 'id') ev.id = v;
            else if (k === 'event') ev.event = v;
            else if (k === 'data') ev.data = ev.data === '' ? v : `${ev.data}\n${v}`;
            has = true;
          }
          if (has) events.push(ev);
          if (events.length >= count) {
            clearTimeout(timer);
            req.destroy();
            resolve(events);
            return;
          }
          i = buf.indexOf('\n\n');
        }
      });
    });
    req.on('error', (e) => (events.length >= count ? undefined : reject(e)));
    req.end();
  });
}

/** `zipline shm create` of a segment smaller than the bridges in these tests use. */
function createSmall(seg: string): ReturnType<typeof runCli> {
  return runCli(['shm', 'create', seg, '--capacity', '1KiB', '--slots', '16', '--slot-size', '64']);
}

describe('shared-memory bridge: zipline ⇄ C', { skip: linux ? false : 'POSIX shared memory (Linux)' }, () => {
  before(() => {
    tools = buildShmTools();
  });
  after(() => {
    assert.deepEqual(tools?.cleanup() ?? [], [], 'no segment left behind');
  });

  test('curl reads what C wrote and C reads what curl posted; ETag, 304, 204, 412, 413', async () => {
    const seg = t().segment();
    const z = await startRuntime(yaml(seg));
    try {
      const base = `http://${bridgesOf(z).address('tele')}/shm/tele`;
      assert.equal(statSync(`/dev/shm${seg}`).mode & 0o777, 0o600);
      assert.match((await curl(['-i', base])).out, /^HTTP\/1\.1 204/);
      assert.equal((await t().run(['put', seg, 'written by C'])).result, 0);
      const got = await curl(['-i', base]);
      assert.match(got.out, /^HTTP\/1\.1 200/);
      const etag = /ETag: ("1-[0-9a-z]+")/i.exec(got.out)?.[1] ?? assert.fail(got.out);
      assert.match(got.out, /written by C$/);
      assert.match((await curl(['-i', '-H', `If-None-Match: ${etag}`, base])).out, /^HTTP\/1\.1 304/);
      assert.match((await curl(['-i', '-H', `If-None-Match: "0-x", ${etag}`, base])).out, /^HTTP\/1\.1 304/);
      // with one bridge on this address, /shm alone names it
      assert.match((await curl([`http://${bridgesOf(z).address('tele')}/shm`])).out, /written by C/);
      const post = await curl(['-i', '-d', 'posted by curl', base]);
      assert.match(post.out, /^HTTP\/1\.1 200/);
      assert.match(post.out, /"version":2/);
      assert.equal((await t().run(['get', seg])).text, 'posted by curl');
      const stale = await curl(['-i', '-H', 'If-Match: "1"', '-d', 'x', base]);
      assert.match(stale.out, /^HTTP\/1\.1 412/);
      assert.match(stale.out, /ZL_SHM_PRECONDITION/);
      assert.match((await curl(['-i', '-H', 'If-Match: "2"', '-d', 'cas', base])).out, /^HTTP\/1\.1 200/);
      const tagged = etag.replace('"1-', '"3-'); // the ETag the compare-and-set above answered with
      assert.match(
        (await curl(['-i', '-H', `If-Match: ${tagged}`, '-d', 'cas', base])).out,
        /^HTTP\/1\.1 200/,
      );
      const big = await curl(['-i', '-d', 'x'.repeat(5000), base]);
      assert.match(big.out, /^HTTP\/1\.1 413/);
      // chunked, so refused on the way while curl still sends: the client reads its 413 (the rest
      // of the body is read and dropped; closing at once would reset the connection under it)
      const file = join(tempDir('zl-shm-body-'), 'big');
      writeFileSync(file, Buffer.alloc(4 << 20, 0x61));
      for (const expect of [[], ['-H', 'Expect:']]) {
        const chunked = await curl([
          '-i',
          '-H',
          'Transfer-Encoding: chunked',
          ...expect,
          '--data-binary',
          `@${file}`,
          base,
        ]);
        assert.equal(chunked.code, 0, 'no reset');
        assert.match(chunked.out, /HTTP\/1\.1 413 [\s\S]*x-zipline-error: ZL_SHM_TOO_LARGE/i);
      }
      const stats = JSON.parse((await curl([`${base}/stats`])).out) as { snapshot: { version: number } };
      assert.equal(stats.snapshot.version, 4);
      // garbage on the port: a coded 400, and the API still answers
      const garbage = (
        await rawRequest(bridgesOf(z).address('tele'), '\x16\x03\x01 not http\r\n\r\n')
      ).data.toString();
      assert.match(garbage, /^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*x-zipline-error: ZL_SHM_BAD_REQUEST\r\n/);
      assert.match((await curl(['-i', base])).out, /^HTTP\/1\.1 200/);
    } finally {
      await z.stop();
    }
    assert.equal(existsSync(`/dev/shm${seg}`), false, 'remove_on_exit removed the segment');
  });

  test("a read takes the snapshot's size, not the capacity, and stays whole while a C writer changes the size under it", async () => {
    const seg = t().segment();
    const z = await startRuntime(yaml(seg));
    try {
      const bridge = bridgesOf(z).bridges.get('tele');
      assert.ok(bridge);
      assert.match(
        (await curl(['-i', '-d', '0123456789', `http://${bridgesOf(z).address('tele')}/shm/tele`])).out,
        /^HTTP\/1\.1 200/,
      );
      const small = bridge.read();
      assert.equal(small?.data.toString(), '0123456789');
      // a GET used to allocate the whole capacity (4 KiB here; up to 256 MiB) for every read
      assert.equal(small?.data.buffer.byteLength, 10, 'the buffer is the size of the snapshot');
      // readers of the same version share one copy (concurrent GETs of a large snapshot held one each)
      assert.equal(bridge.read()?.data, small?.data, 'the same copy while the version stays');
      await t().run(['put', seg, 'next']);
      const next = bridge.read();
      assert.equal(next?.data.toString(), 'next');
      assert.notEqual(next?.version, small?.version);
      // payload: 1 + w % 512 words, each = w; the reader looks up the size, then reads: a writer
      // growing or shrinking it between the two must never give a cut or padded snapshot
      const writer = t().run(['write', seg, '1.5', 'varying']);
      const sizes = new Set<number>();
      let reads = 0;
      let busy = 0;
      const end = Date.now() + 1000;
      while (Date.now() < end) {
        let r: ReturnType<typeof bridge.read>;
        try {
          r = bridge.read();
        } catch (err) {
          assert.equal((err as { code?: string }).code, 'ZL_SHM_BUSY');
          busy++;
          continue;
        }
        if (r === null || r.data.length % 8 !== 0 || r.data.length === 10) continue;
        const w = r.data.readBigUInt64LE(0);
        assert.equal(r.data.length, 8 * (1 + Number(w % 512n)), `the size written with ${w}`);
        for (let i = 8; i < r.data.length; i += 8) assert.equal(r.data.readBigUInt64LE(i), w, 'not torn');
        assert.ok(r.data.buffer.byteLength <= 4096);
        sizes.add(r.data.length);
        reads++;
      }
      assert.ok(Number((await writer).writes) > 1000, 'the writer wrote');
      assert.ok(reads > 1000 && sizes.size > 50, `${reads} reads of ${sizes.size} sizes (${busy} busy)`);
    } finally {
      await z.stop();
    }
  });

  test('uploads being received hold at most upload_buffer (never below one full snapshot): over it 503 ZL_SHM_BUSY, aborted ones give their bytes back', async () => {
    const seg = t().segment();
    const errors: Record<string, unknown>[] = [];
    const log = pino({ level: 'error' }, { write: (line: string) => errors.push(JSON.parse(line)) });
    // upload_buffer 1KiB is raised to the 4 KiB capacity
    const z = await startRuntime(
      yaml(seg).replace('remove_on_exit: true }', 'remove_on_exit: true, upload_buffer: 1KiB }'),
      { log },
    );
    try {
      const address = bridgesOf(z).address('tele');
      const bridge = bridgesOf(z).bridges.get('tele');
      assert.ok(bridge);
      assert.equal(bridge.uploads.limit, 4096);
      const complete = (d: Buffer): boolean => parseResponse(d, 'POST') !== null;
      const head = (length: number): string =>
        `POST /shm/tele HTTP/1.1\r\nHost: x\r\nContent-Length: ${length}\r\n\r\n`;
      // a slow upload of 3,000 bytes: its length is reserved before any of it is read
      const slow = await dial(address);
      const slowAnswer = readAll(slow);
      slow.write(`${head(3000).replace('\r\n\r\n', '\r\nConnection: close\r\n\r\n')}${'a'.repeat(1000)}`);
      await until(() => bridge.uploads.inUse === 3000, 'the slow upload reserved its length');
      const over = await rawRequest(address, `${head(2000)}${'b'.repeat(2000)}`, 5000, complete);
      assert.match(over.data.toString(), /^HTTP\/1\.1 503/);
      assert.match(over.data.toString(), /x-zipline-error: ZL_SHM_BUSY/i);
      assert.match(over.data.toString(), /retry-after: 1/i);
      // chunked: each chunk is reserved as it arrives; the one that passes the bound is refused
      // and the rest is read and dropped, so the client gets its 503 rather than a reset
      const chunk = (n: number): string => `${n.toString(16)}\r\n${'c'.repeat(n)}\r\n`;
      const chunked = await rawRequest(
        address,
        [
          'POST /shm/tele HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n',
          chunk(500),
          chunk(500),
          chunk(500),
          chunk(500),
          '0\r\n\r\n',
        ],
        5000,
        complete,
      );
      assert.match(chunked.data.toString(), /^HTTP\/1\.1 503/);
      assert.equal(chunked.reset, false);
      assert.equal(bridge.uploads.inUse, 3000, 'the refused uploads gave their bytes back');
      // the slow upload completes and is written; then its bytes are free again
      slow.end('a'.repeat(2000));
      assert.match((await slowAnswer).toString(), /^HTTP\/1\.1 200/);
      assert.equal(bridge.read()?.data.length, 3000);
      assert.equal(bridge.uploads.inUse, 0);
      // an upload whose client goes away mid-body gives its bytes back too
      const gone = await dial(address);
      gone.write(`${head(4096)}${'d'.repeat(100)}`);
      await until(() => bridge.uploads.inUse === 4096, 'the upload reserved its length');
      const aborted = (): Promise<number> =>
        seriesValue('zipline_connection_errors_total{listener="shm.http",code="ZL_CLIENT_ABORTED"}');
      const abortedBefore = await aborted();
      gone.destroy();
      await until(() => bridge.uploads.inUse === 0, 'the aborted upload gave its bytes back');
      // a client going away is counted, not logged as a failure of zipline's (it was, at error)
      await until(async () => (await aborted()) === abortedBefore + 1, 'the abort counted');
      assert.deepEqual(errors, []);
      const whole = await rawRequest(address, `${head(4096)}${'e'.repeat(4096)}`, 5000, complete);
      assert.match(whole.data.toString(), /^HTTP\/1\.1 200/, 'one full snapshot always fits');
    } finally {
      await z.stop();
    }
  });

  test('shm[].max_connections: bridges sharing an address get the largest cap; one more is closed unanswered and counted', async () => {
    const [a, b] = [t().segment(), t().segment()];
    const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
shm:
  - { name: a, segment: ${a}, snapshot_capacity: 1KiB, slots: 16, slot_size: 64, http: 127.0.0.1:0, max_connections: 1, remove_on_exit: true }
  - { name: b, segment: ${b}, snapshot_capacity: 1KiB, slots: 16, slot_size: 64, http: 127.0.0.1:0, max_connections: 2, remove_on_exit: true }
`);
    const refused = async (): Promise<number> =>
      (await metrics.downstreamRejected.get()).values.find(
        (v) => v.labels.listener === 'shm.http' && v.labels.code === 'ZL_LISTENER_OVER_LIMIT',
      )?.value ?? 0;
    const before = await refused();
    try {
      const { clients, extra } = await fillToCap(bridgesOf(z).address('a'), 2, '/shm/a/stats');
      for (const c of clients) c.close();
      assert.equal(extra.closed, true, 'the third connection is closed');
      assert.equal(extra.data.length, 0, 'unanswered');
      assert.equal((await refused()) - before, 1);
    } finally {
      await z.stop();
    }
  });

  test('a C writer killed holding the lock: the next POST succeeds at once; the steal is counted', async () => {
    const seg = t().segment();
    const z = await startRuntime(yaml(seg));
    try {
      const base = `http://${bridgesOf(z).address('tele')}/shm/tele`;
      await curl(['-d', 'committed', base]);
      const holder = spawn(t().stress, ['hold', seg], { stdio: ['ignore', 'pipe', 'ignore'] });
      await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
      holder.kill('SIGKILL');
      await new Promise((r) => holder.once('exit', r));
      assert.equal((await curl([base])).out, 'committed', 'readers keep the last committed value');
      const t0 = performance.now();
      const r = await curl(['-i', '-d', 'after crash', base]);
      assert.match(r.out, /^HTTP\/1\.1 200/);
      assert.ok(performance.now() - t0 < 500, 'no wait on a dead owner');
      const stats = JSON.parse((await curl([`${base}/stats`])).out) as { snapshot: { steals: number } };
      assert.equal(stats.snapshot.steals, 1);
    } finally {
      await z.stop();
    }
  });

  test('C → Node messages over SSE with Last-Event-ID replay; Node → C messages; long-poll and stream wake on C writes', async () => {
    const seg = t().segment();
    const z = await startRuntime(yaml(seg));
    try {
      const base = `http://${bridgesOf(z).address('tele')}/shm/tele`;
      const bridge = bridgesOf(z).bridges.get('tele');
      const live = sse(`${base}/messages`, 5);
      await until(() => bridge?.subscribers === 1, 'SSE subscribed');
      await t().run(['ring', seg, '5']);
      const got = await live;
      assert.deepEqual(
        got.map((e) => e.data),
        ['m0', 'm1', 'm2', 'm3', 'm4'],
      );
      const replay = await sse(`${base}/messages`, 2, { 'Last-Event-ID': got[2]?.id ?? '' });
      assert.deepEqual(
        replay.map((e) => e.data),
        ['m3', 'm4'],
      );
      // a first subscriber asks for what is kept from a sequence on (0: all of it); Last-Event-ID,
      // which an EventSource sends when it reconnects to the same URL, wins over it
      assert.deepEqual(
        (await sse(`${base}/messages?from=0`, 5)).map((e) => e.data),
        ['m0', 'm1', 'm2', 'm3', 'm4'],
      );
      assert.deepEqual(
        (await sse(`${base}/messages?from=3`, 2)).map((e) => e.data),
        ['m3', 'm4'],
      );
      assert.deepEqual(
        (await sse(`${base}/messages?from=0`, 1, { 'Last-Event-ID': got[3]?.id ?? '' })).map((e) => e.data),
        ['m4'],
      );
      assert.match(
        (await curl(['-i', '--max-time', '5', `${base}/messages?from=-1`])).out,
        /^HTTP\/1\.1 400[\s\S]*ZL_SHM_BAD_REQUEST/,
      );
      // Node → C: the example program prints the first message it receives
      assert.match((await curl(['-i', '-d', 'hello C', `${base}/messages`])).out, /^HTTP\/1\.1 202/);
      const out = execFileSync(t().example, [seg, 'snap from example', '0'], { encoding: 'utf8' });
      assert.match(out, /from node: hello C/);
      // long-poll: wakes when C writes
      const current = Number(JSON.parse((await curl([`${base}/stats`])).out).snapshot.version);
      const poll = curl(['-i', `${base}?since=${current}&timeout=5000`]);
      const stream = sse(`${base}/stream`, 2); // the current value, then the next one
      await until(() => bridge?.subscribers === 2, 'long-poll and stream waiting');
      await t().run(['put', seg, 'woke them']);
      assert.match((await poll).out, /woke them$/);
      assert.equal((await stream)[1]?.data, 'woke them');
      const rx = (await metrics.shmMessages.get()).values.find(
        (v) => v.labels.bridge === 'tele' && v.labels.direction === 'c_to_node',
      );
      assert.ok((rx?.value ?? 0) >= 5);
    } finally {
      await z.stop();
    }
  });

  test('an SSE subscriber that stops reading is sent nothing more (bounded), then catches up: a gap event and the kept messages, in order', async () => {
    const seg = t().segment();
    const z = await startRuntime(yaml(seg));
    try {
      const bridge = bridgesOf(z).bridges.get('tele');
      assert.ok(bridge);
      const [host, p] = splitAddress(bridgesOf(z).address('tele') ?? '');
      /** An SSE request whose answer is not read until `read()`; `text()`: what was read so far. */
      const subscribe = (path: string) => {
        const socket = connect(p, host);
        socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
        socket.pause();
        let text = '';
        return {
          socket,
          text: () => text,
          read: () => {
            socket.setEncoding('latin1');
            socket.on('data', (d: string) => {
              text += d;
            });
            socket.resume();
          },
        };
      };
      const servers = (bridgesOf(z) as unknown as { servers: { streams: Set<{ writableLength: number }> }[] })
        .servers;
      /** Bytes zipline holds for its SSE subscribers. */
      const queued = (): number =>
        servers.flatMap((s) => [...s.streams]).reduce((n, r) => n + r.writableLength, 0);
      const client = subscribe('/shm/tele/messages');
      await until(() => bridge.subscribers === 1, 'SSE subscribed');
      // 20 MB of messages, far beyond what the sockets' buffers hold for a client that does not read
      const N = 200_000;
      assert.deepEqual(await t().run(['flood', seg, String(N), '100']), { sent: N });
      await until(
        () => (bridge.recentMessages().at(-1)?.seq ?? -1) === N - 1,
        'every message taken from the ring',
      );
      // what waits in zipline for the subscriber: before, every message (24.8 MB); now at most
      // one write past the high-water mark
      assert.ok(queued() <= 64 * 1024, `${queued()} bytes queued for the subscriber`);
      // it reads again: it gets what was sent, then a gap event, then the messages still kept
      client.read();
      await until(() => client.text().includes(`\nid: ${N - 1}-`), 'the last message');
      client.socket.destroy();
      const events = client
        .text()
        .slice(client.text().indexOf('\r\n\r\n') + 4)
        .split('\n\n')
        .map(
          (block) =>
            Object.fromEntries(
              block
                .split('\n')
                .filter((l) => /^(id|event|data): /.test(l))
                .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]),
            ) as Record<string, string>,
        )
        .filter((e) => e.event !== undefined);
      const gaps = events.filter((e) => e.event === 'gap');
      assert.ok(gaps.length >= 1, 'the subscriber was told which messages it missed');
      let expect = 0;
      for (const e of events) {
        if (e.event === 'gap') {
          const g = JSON.parse(e.data ?? '') as { from: number; to: number };
          assert.equal(g.from, expect, 'a gap starts at the first message not sent');
          expect = g.to + 1;
        } else {
          assert.equal(Number.parseInt(e.id ?? '', 10), expect, 'messages in order, none twice');
          assert.ok(e.data?.startsWith(`m${expect} `));
          expect++;
        }
      }
      assert.equal(expect, N);
      // the snapshot stream likewise: versions written while it does not read are not queued;
      // once it reads, it gets the latest one
      const watcher = subscribe('/shm/tele/stream');
      await until(() => bridge.subscribers === 1, 'stream subscribed');
      await t().run(['write', seg, '1']); // 4 KiB versions, as fast as C writes them, for 1 s
      const last = (bridge.stats().snapshot as { version: number }).version; // read from the segment
      await until(() => bridge.version === last, 'the last version seen');
      assert.ok(queued() <= 64 * 1024, `${queued()} bytes queued for the stream (before: 130 MB)`);
      watcher.read();
      await until(
        () => watcher.text().includes(`\nid: ${last}-${bridge.tag}\nevent: snapshot\n`),
        'the latest version',
      );
      watcher.socket.destroy();
    } finally {
      await z.stop();
    }
  });

  test('a C peer writing outside the protocol: malformed slots skipped and counted, a malformed snapshot is 502 until the next write, a scribbled header or index changes nothing', async () => {
    const seg = t().segment();
    const z = await startRuntime(yaml(seg));
    const scribble = async (what: string): Promise<void> => {
      assert.equal((await t().run(['scribble', seg, what])).scribbled, what);
    };
    const corrupt = async (part: string): Promise<number> =>
      (await metrics.shmCorrupt.get()).values.find(
        (v) => v.labels.bridge === 'tele' && v.labels.part === part,
      )?.value ?? 0;
    try {
      const base = `http://${bridgesOf(z).address('tele')}/shm/tele`;
      const bridge = bridgesOf(z).bridges.get('tele');
      // ring: a slot with a length over the slot and one whose seq is not its position are skipped;
      // the messages around them arrive in order with their own sequence numbers
      const live = sse(`${base}/messages`, 4);
      await until(() => bridge?.subscribers === 1, 'SSE subscribed');
      await t().run(['ring', seg, '2']);
      await scribble('slot-len');
      await scribble('slot-seq');
      await t().run(['ring', seg, '2']);
      const got = await live;
      assert.deepEqual(
        got.map((e) => `${Number.parseInt(e.id, 10)}:${e.data}`),
        ['0:m0', '1:m1', '4:m0', '5:m1'],
      );
      await until(() => bridge?.subscribers === 0, 'the message subscriber gone');
      // a head 1000 ahead (a ring holds 64): the tail jumps, the 64 stale slots are skipped
      await scribble('head-jump');
      const corruptInStats = async (): Promise<number> =>
        (JSON.parse((await curl([`${base}/stats`])).out) as { c_to_node: { corrupt: number } }).c_to_node
          .corrupt;
      // the bridge has skipped them before C sends again (else the ring would look full to C)
      await until(
        async () => (await corruptInStats()) === 2 + 1 + 64,
        'the jump and the 64 stale slots skipped',
      );
      assert.equal(await corrupt('c_to_node'), 2 + 1 + 64);
      await t().run(['ring', seg, '1']);
      await until(() => bridge?.recentMessages().at(-1)?.seq === 1006, 'the next message after the jump');

      // snapshot: a length over the capacity, announced as a new version, with a stream subscriber
      await curl(['-d', 'good', base]);
      const stream = sse(`${base}/stream`, 2);
      await until(() => bridge?.subscribers === 1, 'stream subscribed');
      const announced = (bridge?.version ?? 0) + 1;
      await scribble('snaplen');
      await until(
        () => bridge?.version === announced,
        'the malformed version announced (the stream tried it)',
      );
      const bad = await curl(['-i', base]);
      assert.match(bad.out, /^HTTP\/1\.1 502/);
      assert.match(bad.out, /x-zipline-error: ZL_SHM_CORRUPT/i);
      assert.match((await curl(['-i', '-d', 'repaired', base])).out, /^HTTP\/1\.1 200/);
      assert.deepEqual(
        (await stream).map((e) => e.data),
        ['good', 'repaired'],
        'the stream skipped the malformed version and goes on',
      );
      await until(() => bridge?.subscribers === 0, 'stream closed');
      await scribble('snapodd');
      assert.match((await curl(['-i', base])).out, /^HTTP\/1\.1 502/);
      assert.match((await curl(['-i', '-d', 'repaired again', base])).out, /^HTTP\/1\.1 200/);
      assert.equal((await curl([base])).out, 'repaired again');
      assert.equal(await corrupt('snapshot'), 3, "two GETs and the stream's read refused");
      // an out-of-range buffer index, then sizes and offsets rewritten in the header: the bridge
      // keeps the layout it validated at open
      await scribble('active');
      assert.match((await curl(['-i', '-d', 'after index', base])).out, /^HTTP\/1\.1 200/);
      assert.equal((await curl([base])).out, 'after index');
      await scribble('identity');
      assert.match((await curl(['-i', '-d', 'after identity', base])).out, /^HTTP\/1\.1 200/);
      assert.equal((await curl([base])).out, 'after identity');
      assert.match((await curl(['-i', '-d', 'to C', `${base}/messages`])).out, /^HTTP\/1\.1 202/);
      const after = JSON.parse((await curl([`${base}/stats`])).out) as { layout: { ring_slot_size: number } };
      assert.equal(after.layout.ring_slot_size, 128);
    } finally {
      await z.stop();
    }
  });

  for (const wake of ['futex', 'poll'] as const) {
    test(`a peer truncating the segment does not take zipline down: the bridge answers 502 ZL_SHM_CORRUPT, counted and logged, the rest runs on (wake: ${wake})`, async () => {
      const seg = t().segment();
      // a process of its own: a SIGBUS nobody catches kills the whole process (as it did)
      const z = await spawnZipline(
        yaml(seg).replace('remove_on_exit: true }', `remove_on_exit: true, wake: ${wake} }`),
      );
      try {
        const url = (JSON.parse(await z.waitForLog(/shm bridge serving/)) as { http: string }).http;
        assert.match((await curl(['-i', '-d', 'before', `${url}/tele`])).out, /^HTTP\/1\.1 200/);
        const live = sse(`${url}/tele/stream`, 2);
        const subscribers = async (): Promise<number> =>
          (JSON.parse((await curl([`${url}/tele/stats`])).out) as { subscribers: number }).subscribers;
        await until(async () => (await subscribers()) === 1, 'the stream subscribed');
        // what a C program opening the segment with O_TRUNC does, for a moment or for good
        truncateSync(`/dev/shm${seg}`, 0);
        const got = await curl(['-i', `${url}/tele`]);
        assert.match(got.out, /^HTTP\/1\.1 502/);
        assert.match(got.out, /x-zipline-error: ZL_SHM_CORRUPT/i);
        assert.match(got.out, /truncated under zipline/);
        assert.match((await curl(['-i', '-d', 'after', `${url}/tele`])).out, /^HTTP\/1\.1 502/);
        assert.match((await curl(['-i', '-d', 'to C', `${url}/tele/messages`])).out, /^HTTP\/1\.1 502/);
        assert.equal((JSON.parse((await curl([`${url}/tele/stats`])).out) as { lost?: boolean }).lost, true);
        // an open stream ends with an error event; a new one is refused
        assert.deepEqual(
          (await live).map((e) => e.event),
          ['snapshot', 'error'],
        );
        assert.match((await curl(['-i', `${url}/tele/stream`])).out, /^HTTP\/1\.1 502/);
        const line = JSON.parse(await z.waitForLog(/segment truncated under zipline/)) as {
          level: string;
          code: string;
        };
        assert.deepEqual([line.level, line.code], ['error', 'ZL_SHM_CORRUPT']);
        const metricsText = await (await fetch(`${z.admin}metrics`)).text();
        assert.match(metricsText, /zipline_shm_corrupt_total\{bridge="tele",part="segment"\} 1\n/);
        assert.equal(z.proc.exitCode, null, 'still running');
        assert.equal((await fetch(`${z.admin}healthz`)).status, 200);
        // the way back: remove the truncated file; zipline creates the segment again and serves it
        assert.equal((await runCli(['shm', 'rm', seg])).code, 0);
        await until(
          async () => /^HTTP\/1\.1 204/.test((await curl(['-i', `${url}/tele`])).out),
          'a fresh segment',
        );
        assert.match((await curl(['-i', '-d', 'again', `${url}/tele`])).out, /^HTTP\/1\.1 200/);
        assert.equal((await curl([`${url}/tele`])).out, 'again');
      } finally {
        await z.stop();
      }
    });
  }

  test('waiter threads started after C wrote still post it: messages and a snapshot that came before them are not left waiting for the next one', async () => {
    const seg = t().segment();
    const binding = loadShm();
    const h = binding.open(seg, true, 0o600, 4096, 64, 128, false, false);
    try {
      // what a busy machine does when the threads start late: C writes between the bridge's
      // first look and the threads' first look
      await t().run(['ring', seg, '3']);
      await t().run(['put', seg, 'before the waiters']);
      const kinds = new Set<number>();
      binding.watch(h, (kind) => kinds.add(kind));
      await until(() => kinds.has(1) && kinds.has(2), 'a snapshot and messages posted');
    } finally {
      binding.close(h);
      binding.unlink(seg);
    }
  });

  test('wake: poll delivers C → Node messages from the event loop (no waiter threads)', async () => {
    const seg = t().segment();
    const z = await startRuntime(
      yaml(seg).replace('remove_on_exit: true }', 'remove_on_exit: true, wake: poll }'),
    );
    try {
      const bridge = bridgesOf(z).bridges.get('tele');
      await t().run(['ring', seg, '3']);
      await until(() => bridge?.recentMessages().length === 3, 'messages polled');
      assert.deepEqual(
        bridge?.recentMessages().map((m) => m.data.toString()),
        ['m0', 'm1', 'm2'],
      );
      await t().run(['put', seg, 'polled']);
      await until(() => bridge?.version === 1, 'snapshot version seen');
    } finally {
      await z.stop();
    }
  });

  test('one zipline per segment: a second one is refused at start (ZL_SHM_ATTACH), the first keeps its messages; once it is gone the segment can be served again', async () => {
    const seg = t().segment();
    const first = await startRuntime(yaml(seg));
    let firstStopped = false;
    try {
      // its own http address: only the segment is shared
      const second = await startRuntime(yaml(seg)).catch((err: Error & { code?: string }) => err);
      if (!(second instanceof Error)) {
        await second.stop();
        assert.fail('a second zipline served the segment too');
      }
      assert.equal(second.code, 'ZL_SHM_ATTACH');
      assert.match(second.message, /another zipline process serves this segment/);
      // the refused one took nothing: C's messages all reach the first
      await t().run(['ring', seg, '3']);
      const bridge = bridgesOf(first).bridges.get('tele');
      await until(() => bridge?.recentMessages().length === 3, 'the three messages at the first');
      await first.stop();
      firstStopped = true;
      // (the first removed its segment on stop: the next one creates it and serves it)
      const next = await startRuntime(yaml(seg));
      await next.stop();
    } finally {
      if (!firstStopped) await first.stop();
    }
  });

  test('a peer that removes the segment and creates it again: zipline follows the name (attaches to the new one); one of other sizes is 502 ZL_SHM_ATTACH until it fits', async () => {
    const seg = t().segment();
    const z = await startRuntime(yaml(seg));
    try {
      const base = `http://${bridgesOf(z).address('tele')}/shm/tele`;
      const bridge = bridgesOf(z).bridges.get('tele');
      await t().run(['put', seg, 'old segment']);
      assert.equal((await curl([base])).out, 'old segment');
      // a C program's clean-up at exit, then its next start: a new file under the same name
      assert.equal((await runCli(['shm', 'rm', seg])).code, 0);
      await t().run(['put', seg, 'new segment']);
      await until(async () => (await curl([base])).out === 'new segment', 'zipline serving the new segment');
      await t().run(['ring', seg, '2']);
      await until(() => bridge?.recentMessages().length === 2, 'messages from the new segment');
      assert.match((await curl(['-i', '-d', 'to the new one', base])).out, /^HTTP\/1\.1 200/);
      assert.equal((await t().run(['get', seg])).text, 'to the new one');
      // replaced by one of other sizes (in one go: else zipline may create its own in between):
      // nothing to attach to, 502 until a fitting one is there
      assert.equal((await t().run(['replace', seg, '1024', '16', '64'])).result, 0);
      await until(async () => /^HTTP\/1\.1 502/.test((await curl(['-i', base])).out), 'a 502 for the misfit');
      const misfit = await curl(['-i', base]);
      assert.match(misfit.out, /x-zipline-error: ZL_SHM_ATTACH/i);
      assert.match(misfit.out, /sizes/);
      assert.ok((await curl([`${base}/stats`])).out.includes('"detached"'));
      assert.equal((await runCli(['shm', 'rm', seg])).code, 0);
      await t().run(['put', seg, 'fits again']);
      await until(async () => (await curl([base])).out === 'fits again', 'attached once it fits');
    } finally {
      await z.stop();
    }
  });

  test('after a peer replaced the segment, its versions and ids start again: an ETag, Last-Event-ID or long poll from the old one matches nothing in the new one', async () => {
    const seg = t().segment();
    const z = await startRuntime(yaml(seg));
    try {
      const base = `http://${bridgesOf(z).address('tele')}/shm/tele`;
      const bridge = bridgesOf(z).bridges.get('tele') ?? assert.fail('no bridge');
      for (const v of ['old 1', 'old 2', 'old 3']) await t().run(['put', seg, v]);
      const old = await curl(['-i', base]);
      const etag = /ETag: ("3-[0-9a-z]+")/i.exec(old.out)?.[1] ?? assert.fail(old.out);
      await t().run(['ring', seg, '3']); // ids 0-2 of the old segment
      await until(() => bridge.recentMessages().length === 3, 'the old messages taken');
      const oldTag = bridge.tag;
      // a C program's clean-up at exit, then its next start: versions and sequences from 1 and 0
      assert.equal((await runCli(['shm', 'rm', seg])).code, 0);
      await t().run(['put', seg, 'new 1']);
      await until(async () => (await curl([base])).out === 'new 1', 'zipline serving the new segment');
      assert.notEqual(bridge.tag, oldTag);
      // a long poll from the old segment's version 3: answered at once with what is there now
      const poll = await curl(['-i', '-m', '10', `${base}?since=3&timeout=30000`]);
      assert.equal(poll.code, 0, 'answered, not held for the timeout');
      assert.match(poll.out, /new 1$/);
      for (const v of ['new 2', 'new 3']) await t().run(['put', seg, v]);
      await t().run(['ring', seg, '2']);
      await until(() => bridge.recentMessages().length === 2, 'the new messages taken');
      // version 3 of the old segment is not version 3 of this one
      const cached = await curl(['-i', '-H', `If-None-Match: ${etag}`, base]);
      assert.match(cached.out, /^HTTP\/1\.1 200/);
      assert.match(cached.out, /new 3$/);
      const cas = await curl(['-i', '-H', `If-Match: ${etag}`, '-d', 'x', base]);
      assert.match(cas.out, /^HTTP\/1\.1 412/);
      assert.match(cas.out, /replaced/);
      // an EventSource reconnecting with an id of the old segment gets the new one's messages
      const deadline = (ms: number) =>
        new Promise<never>((_, no) => setTimeout(() => no(new Error('no replay')), ms));
      for (const id of ['2', `2-${oldTag}`]) {
        const replay = await Promise.race([
          sse(`${base}/messages`, 2, { 'Last-Event-ID': id }),
          deadline(5000),
        ]);
        assert.deepEqual(
          replay.map((e) => [e.id, e.data]),
          [
            [`0-${bridge.tag}`, 'm0'],
            [`1-${bridge.tag}`, 'm1'],
          ],
          `Last-Event-ID ${id}`,
        );
      }
    } finally {
      await z.stop();
    }
  });

  test("a /stream subscriber across a replacement gets the new segment's snapshot even when its version number is the one it had", async () => {
    const [seg, next] = [t().segment(), t().segment()];
    const z = await startRuntime(yaml(seg));
    try {
      const base = `http://${bridgesOf(z).address('tele')}/shm/tele`;
      const bridge = bridgesOf(z).bridges.get('tele') ?? assert.fail('no bridge');
      for (const v of ['old 1', 'old 2', 'old 3']) await t().run(['put', seg, v]);
      await until(() => bridge.version === 3, 'version 3 seen');
      const events = sse(`${base}/stream`, 2);
      await until(() => bridge.subscribers === 1, 'stream subscribed');
      // the new segment reaches version 3 before zipline sees it: made aside, then renamed over the
      // name in one step (as a peer's unlink + create + three writes between two looks would)
      for (const v of ['new 1', 'new 2', 'new 3']) await t().run(['put', next, v]);
      renameSync(`/dev/shm${next}`, `/dev/shm${seg}`);
      const deadline = new Promise<never>((_, no) =>
        setTimeout(() => no(new Error('no new snapshot')), 5000),
      );
      const got = await Promise.race([events, deadline]);
      assert.deepEqual(
        got.map((e) => e.data),
        ['old 3', 'new 3'],
      );
      assert.notEqual(got[0]?.id, got[1]?.id);
    } finally {
      await z.stop();
    }
  });

  test('a segment another user owns is refused unless allow_other_owner (a local user could have planted the name)', {
    skip: process.getuid?.() === 0 ? false : 'chown of the segment needs root',
  }, async () => {
    const seg = t().segment();
    await t().run(['put', seg, 'planted']); // created by the test tool, then given to nobody
    chownSync(`/dev/shm${seg}`, 65534, 65534);
    const refused = await startRuntime(yaml(seg)).catch((err: Error & { code?: string }) => err);
    if (!(refused instanceof Error)) {
      await refused.stop();
      assert.fail('a segment of uid 65534 was served');
    }
    assert.equal(refused.code, 'ZL_SHM_ATTACH');
    assert.match(refused.message, /belongs to uid 65534/);
    const z = await startRuntime(
      yaml(seg).replace('remove_on_exit: true }', 'remove_on_exit: true, allow_other_owner: true }'),
    );
    try {
      assert.equal((await curl([`http://${bridgesOf(z).address('tele')}/shm/tele`])).out, 'planted');
    } finally {
      await z.stop();
    }
  });

  test('a segment of other sizes is refused at start with ZL_SHM_ATTACH; the process does not run half-configured', async () => {
    const seg = t().segment();
    const created = await createSmall(seg);
    assert.equal(created.code, 0, created.stderr);
    await assert.rejects(startRuntime(yaml(seg)), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ZL_SHM_ATTACH');
      assert.match(err.message, /sizes/);
      return true;
    });
    assert.equal(existsSync(`/dev/shm${seg}`), true, 'a segment zipline did not create is left alone');
  });

  test('zipline shm create | inspect | rm', async () => {
    const seg = t().segment();
    const created = await createSmall(seg);
    assert.equal(created.code, 0, created.stderr);
    assert.equal(
      (JSON.parse(created.stdout) as { layout: { snapshot_capacity: number } }).layout.snapshot_capacity,
      1024,
    );
    await t().run(['put', seg, 'from C']);
    await t().run(['ring', seg, '3']);
    // inspecting is only looking: the messages C sent stay for zipline (an inspect used to take
    // them off the ring, and they were lost)
    for (let i = 0; i < 2; i++) {
      const inspected = JSON.parse((await runCli(['shm', 'inspect', seg])).stdout) as {
        snapshot: { version: number };
        c_to_node: { lag: number };
      };
      assert.deepEqual([inspected.snapshot.version, inspected.c_to_node.lag], [1, 3]);
    }
    const z = await startRuntime(`
admin: { listen: 127.0.0.1:0 }
shm:
  - { name: tele, segment: ${seg}, snapshot_capacity: 1KiB, slots: 16, slot_size: 64, http: 127.0.0.1:0, create: false }
`);
    try {
      assert.deepEqual(
        bridgesOf(z)
          .bridges.get('tele')
          ?.recentMessages()
          .map((m) => m.data.toString()),
        ['m0', 'm1', 'm2'],
      );
    } finally {
      await z.stop();
    }
    assert.equal((await runCli(['shm', 'rm', seg])).code, 0);
    assert.equal(existsSync(`/dev/shm${seg}`), false);
    const again = await runCli(['shm', 'inspect', seg]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /ZL_SHM_ATTACH/);
    // the config's limits: nothing is created with a layout zipline would refuse there
    const bad = await runCli(['shm', 'create', seg, '--capacity', '100GiB', '--slots', '3', '--mode', 'abc']);
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr,
      /snapshot_capacity: 1 B – 256 MiB; slots: a power of two.*; mode: an octal mode/,
    );
    assert.equal(existsSync(`/dev/shm${seg}`), false);
  });
});
