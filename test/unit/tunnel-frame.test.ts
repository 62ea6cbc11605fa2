/**
 * The MS frame codec against the wire contract: every constant pinned to the spec's tables (both
 * the shared contract and the project's copy), frames built byte by byte from the spec, any
 * split of a recorded session decoding identically, zero-copy, and each fatal error's code.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { crc32 } from 'node:zlib';
import {
  ADDRESS,
  CRC_SIZE,
  DEFAULT_MAX_PAYLOAD,
  ERROR,
  FLAG,
  FRAME,
  HEADER_SIZE,
  MAGIC,
  MAX_CONTROL_PAYLOAD,
  MAX_MAX_PAYLOAD,
  OPEN_KIND,
  OPEN_STATUS,
} from '../../src/tunnel/constants.js';
import {
  encodeFrame,
  type Frame,
  FrameDecoder,
  FrameWriter,
  TunnelProtocolError,
} from '../../src/tunnel/frame.js';
import { rng } from '../helpers/rng.js';
import { ROOT } from '../helpers/zipline.js';

const SHARED = readFileSync(join(ROOT, '../shared/design/tunnel-protocol.md'), 'utf8');
const COPY = readFileSync(join(ROOT, 'src/tunnel/SPEC.md'), 'utf8');

describe('constants pinned to the spec', () => {
  test('the project copy of the spec is the shared contract', () => {
    assert.ok(
      COPY.endsWith(SHARED),
      'src/tunnel/SPEC.md = a header line + ../shared/design/tunnel-protocol.md',
    );
  });
  for (const [which, spec] of [
    ['shared contract', SHARED],
    ['project copy', COPY],
  ] as const) {
    test(`frame types, flags, error codes, layout and limits match the ${which}`, () => {
      const types = new Map<string, number>();
      for (const m of spec.matchAll(/^\| 0x([0-9A-F]{2}) \| ([A-Z_]+) \|/gm))
        types.set(m[2] as string, Number.parseInt(m[1] as string, 16));
      assert.deepEqual(Object.fromEntries(types), FRAME);
      const errors = /Error codes: ([^.]+)\./s.exec(spec)?.[1] ?? '';
      const codes = Object.fromEntries(
        [...errors.matchAll(/(\d+) ([A-Z_]+)/g)].map((m) => [m[2] as string, Number(m[1])]),
      );
      assert.deepEqual(codes, ERROR);
      const flags = /(0x01) FIN, (0x02) ACK, (0x04) COMPRESSED/.exec(spec);
      assert.ok(flags);
      assert.deepEqual(
        [Number(flags[1]), Number(flags[2]), Number(flags[3])],
        [FLAG.FIN, FLAG.ACK, FLAG.COMPRESSED],
      );
      assert.match(spec, /`0x4D 0x53` \("MS"\)/);
      assert.equal(MAGIC, 0x4d53);
      for (const [offset, size, field] of [
        [0, 2, 'magic'],
        [2, 4, 'length'],
        [6, 1, 'type'],
        [7, 1, 'flags'],
        [8, 4, 'stream id'],
      ] as const) {
        assert.match(spec, new RegExp(`^\\| ${offset} \\| ${size} \\| ${field} \\|`, 'm'), field);
      }
      assert.match(spec, /^\| 12 \| N \| payload \|/m);
      assert.match(spec, /^\| 12\+N \| 4 \| CRC32 \|/m);
      assert.equal(HEADER_SIZE, 12);
      assert.equal(CRC_SIZE, 4);
      assert.match(spec, /Overhead: 16 bytes a frame/);
      assert.match(spec, /default 16 KiB, at most 64 KiB\), control frames ≤ 64 KiB/);
      assert.equal(DEFAULT_MAX_PAYLOAD, 16 * 1024);
      assert.equal(MAX_MAX_PAYLOAD, 64 * 1024);
      assert.equal(MAX_CONTROL_PAYLOAD, 64 * 1024);
      assert.match(spec, /u8 kind \(1 TCP, 2 UDP\), u8 address type \(1 IPv4, 3 domain, 4 IPv6/);
      assert.deepEqual(OPEN_KIND, { TCP: 1, UDP: 2 });
      assert.deepEqual(ADDRESS, { IPV4: 1, DOMAIN: 3, IPV6: 4 });
      assert.match(
        spec,
        /0 ok, 1 failure, 2 not allowed, 3 network unreachable, 4 host unreachable, 5 refused, 6 timeout/,
      );
      assert.deepEqual(Object.values(OPEN_STATUS), [0, 1, 2, 3, 4, 5, 6]);
    });
  }
});

/** A frame built from the spec's table by hand, independently of the encoder. */
function handmade(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.from([0x4d, 0x53, 0, 0, 0, 0, type, flags, 0, 0, 0, 0]);
  head.writeUInt32BE(payload.length, 2);
  head.writeUInt32BE(stream, 8);
  const body = Buffer.concat([head, payload]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([body, crc]);
}

function decodeAll(bytes: Buffer, cuts: number[]): Frame[] {
  const out: Frame[] = [];
  const d = new FrameDecoder((type, flags, streamId, payload) =>
    out.push({ type, flags, streamId, payload: Buffer.from(payload) }),
  );
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    d.feed(bytes.subarray(at, cut));
    at = cut;
  }
  return out;
}

/** A recorded session: every frame type, empty and full payloads, extension frames ignored. */
function session(): { bytes: Buffer; frames: Frame[] } {
  const r = rng(42);
  const frames: Frame[] = [];
  const parts: Buffer[] = [];
  const add = (type: number, flags: number, streamId: number, payload: Buffer, ignored = false): void => {
    parts.push(encodeFrame(type, flags, streamId, payload));
    if (!ignored) frames.push({ type, flags, streamId, payload });
  };
  add(FRAME.HELLO, 0, 0, Buffer.from('{"version":1,"agent":"a1"}'));
  add(FRAME.HELLO_ACK, 0, 0, Buffer.from('{"version":1}'));
  for (let s = 1; s < 30; s += 2) {
    add(FRAME.OPEN, 0, s, Buffer.from([1, 1, 127, 0, 0, 1, 0x1f, 0x90]));
    add(FRAME.OPEN_ACK, 0, s, Buffer.from([0]));
    const size = Math.floor(r() * DEFAULT_MAX_PAYLOAD);
    add(
      FRAME.DATA,
      s % 3 === 0 ? FLAG.FIN : 0,
      s,
      Buffer.from(Array.from({ length: size }, () => Math.floor(r() * 256))),
    );
    add(FRAME.WINDOW_UPDATE, 0, s, Buffer.from([0, 0, 0x10, 0]));
    add(0x90 + (s % 16), 0, 0, Buffer.from('extension'), true);
  }
  add(FRAME.DATA, 0, 31, Buffer.alloc(0));
  add(FRAME.PING, FLAG.ACK, 0, Buffer.from('12345678'));
  add(FRAME.RST, 0, 33, Buffer.from([0, 0, 0, 8]));
  add(FRAME.GOAWAY, 0, 0, Buffer.from([0, 0, 0, 33, 0, 0, 0, 0, 0, 0, 3, 0xe8]));
  return { bytes: Buffer.concat(parts), frames };
}

describe('frames', () => {
  test('the encoder writes exactly the spec layout; the decoder reads a handmade frame', () => {
    const payload = Buffer.from('hello');
    const mine = encodeFrame(FRAME.DATA, FLAG.FIN, 7, payload);
    assert.deepEqual(mine, handmade(FRAME.DATA, FLAG.FIN, 7, payload));
    assert.equal(mine.length, 16 + 5);
    const got = decodeAll(handmade(FRAME.PING, FLAG.ACK, 0, Buffer.from('abcdefgh')), []);
    assert.deepEqual(got, [
      { type: FRAME.PING, flags: FLAG.ACK, streamId: 0, payload: Buffer.from('abcdefgh') },
    ]);
  });

  test('every split of a recorded session decodes identically: whole, 1-byte feeds, 200 random cuttings', () => {
    const { bytes, frames } = session();
    assert.deepEqual(decodeAll(bytes, []), frames);
    assert.deepEqual(
      decodeAll(
        bytes,
        Array.from({ length: bytes.length - 1 }, (_, i) => i + 1),
      ),
      frames,
    );
    const r = rng(7);
    for (let k = 0; k < 200; k++) {
      const cuts = [
        ...new Set(Array.from({ length: 1 + Math.floor(r() * 40) }, () => Math.floor(r() * bytes.length))),
      ].sort((a, b) => a - b);
      assert.deepEqual(decodeAll(bytes, cuts), frames, `cutting ${k}`);
    }
  });

  test('a frame inside one chunk is handed over without a copy; maxFrames bounds the work of one feed', () => {
    const bytes = Buffer.concat([
      encodeFrame(FRAME.DATA, 0, 1, Buffer.from('zero-copy')),
      encodeFrame(FRAME.PING, 0, 0, Buffer.alloc(8)),
    ]);
    const seen: Buffer[] = [];
    const d = new FrameDecoder((_t, _f, _s, p) => seen.push(p));
    const stopped = d.feed(bytes, 0, 1);
    assert.equal(seen.length, 1);
    assert.equal(seen[0]?.buffer, bytes.buffer, 'a view into the chunk');
    assert.equal(d.feed(bytes, stopped), bytes.length);
    assert.equal(seen.length, 2);
  });

  test('FrameWriter coalesces frames into one buffer', () => {
    const w = new FrameWriter(32);
    w.push(FRAME.PING, 0, 0, Buffer.alloc(8));
    w.push(FRAME.DATA, 0, 1, Buffer.alloc(100, 1));
    const out = w.take();
    assert.ok(out);
    assert.equal(out.length, 16 + 8 + 16 + 100);
    assert.equal(decodeAll(out, []).length, 2);
    assert.equal(w.take(), null);
  });

  const fatal: [string, Buffer, number][] = [
    [
      'bad magic',
      Buffer.concat([Buffer.from('XS'), encodeFrame(FRAME.PING, 0, 0, Buffer.alloc(8)).subarray(2)]),
      ERROR.PROTOCOL_ERROR,
    ],
    [
      'bad CRC',
      (() => {
        const b = encodeFrame(FRAME.DATA, 0, 1, Buffer.from('x'));
        b[b.length - 1] = (b[b.length - 1] as number) ^ 1;
        return b;
      })(),
      ERROR.CRC_ERROR,
    ],
    [
      'a DATA length over the negotiated max',
      handmade(FRAME.DATA, 0, 1, Buffer.alloc(DEFAULT_MAX_PAYLOAD + 1)),
      ERROR.FRAME_SIZE_ERROR,
    ],
    ['an unknown core type', handmade(0x30, 0, 0, Buffer.alloc(0)), ERROR.PROTOCOL_ERROR],
    [
      'WINDOW_UPDATE of 0',
      encodeFrame(FRAME.WINDOW_UPDATE, 0, 1, Buffer.from([0, 0, 0, 0])),
      ERROR.FLOW_CONTROL_ERROR,
    ],
    [
      'WINDOW_UPDATE over 2^31−1',
      encodeFrame(FRAME.WINDOW_UPDATE, 0, 0, Buffer.from([0x80, 0, 0, 0])),
      ERROR.FLOW_CONTROL_ERROR,
    ],
  ];
  for (const [what, bytes, code] of fatal) {
    test(`${what} → TunnelProtocolError ${code}, and the decoder stays dead`, () => {
      const d = new FrameDecoder(() => {});
      assert.throws(
        () => d.feed(bytes),
        (e: unknown) => e instanceof TunnelProtocolError && e.code === code,
      );
      assert.throws(() => d.feed(encodeFrame(FRAME.PING, 0, 0, Buffer.alloc(8))), TunnelProtocolError);
    });
  }

  test('an oversized length is refused from the header alone, before any payload is allocated or awaited', () => {
    const head = Buffer.from([0x4d, 0x53, 0xff, 0xff, 0xff, 0xff, FRAME.DATA, 0, 0, 0, 0, 1]);
    const d = new FrameDecoder(() => {});
    assert.throws(
      () => d.feed(head.subarray(0, 5)) && d.feed(head.subarray(5)),
      (e: unknown) => {
        return e instanceof TunnelProtocolError && e.code === ERROR.FRAME_SIZE_ERROR;
      },
    );
  });

  test('unknown extension types are skipped and the stream goes on', () => {
    const bytes = Buffer.concat([
      handmade(0xab, 0, 0, Buffer.from('future')),
      encodeFrame(FRAME.PING, 0, 0, Buffer.alloc(8)),
    ]);
    assert.deepEqual(
      decodeAll(bytes, [3]).map((f) => f.type),
      [FRAME.PING],
    );
  });
});
