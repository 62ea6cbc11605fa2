/**
 * A strict HTTP/1.1 response reader for end-to-end fuzz tests: it believes nothing it cannot check
 * (a chunked body needs its last chunk and trailer section, a Content-Length body all its bytes,
 * a close-delimited body a FIN, not a reset), so a truncated answer is never taken as complete.
 */
import type { Socket } from 'node:net';
import { endedByReset } from '../../src/l4/reset-socket.js';

export interface Answer {
  readonly complete: boolean;
  readonly status?: number;
  readonly body?: Buffer;
  readonly zerr?: string | undefined;
  readonly close?: boolean;
}

/** Reads answers on one connection: `read(method)` resolves the next one. */
export function reader(s: Socket): (method: string) => Promise<Answer> {
  let buf: Buffer = Buffer.alloc(0);
  let ended: 'fin' | 'reset' | null = null;
  let wake: (() => void) | null = null;
  const poke = (): void => {
    const w = wake;
    wake = null;
    w?.();
  };
  s.on('data', (d: Buffer) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    poke();
  });
  s.on('end', () => {
    // an RST that came with the last bytes reaches Node as an end (reset-socket.ts)
    ended ??= endedByReset(s) ? 'reset' : 'fin';
    poke();
  });
  s.on('error', () => {
    ended = 'reset';
    poke();
  });
  s.on('close', () => {
    ended ??= 'reset';
    poke();
  });
  const more = (): Promise<void> =>
    new Promise((resolve) => {
      wake = resolve;
    });
  const line = async (): Promise<string | null> => {
    for (;;) {
      const i = buf.indexOf('\r\n');
      if (i >= 0) {
        const l = buf.subarray(0, i).toString('latin1');
        buf = buf.subarray(i + 2);
        return l;
      }
      if (ended !== null) return null;
      await more();
    }
  };
  const take = async (n: number): Promise<Buffer | null> => {
    while (buf.length < n) {
      if (ended !== null) return null;
      await more();
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  return async (method) => {
    let status = 0;
    const fields: [string, string][] = [];
    do {
      const sl = await line();
      const m = sl === null ? null : /^HTTP\/1\.1 (\d{3}) /.exec(sl);
      if (m === null) return { complete: false };
      status = Number(m[1]);
      fields.length = 0;
      for (let l = await line(); l !== ''; l = await line()) {
        if (l === null) return { complete: false };
        const c = l.indexOf(':');
        fields.push([l.slice(0, c).toLowerCase(), l.slice(c + 1).trim()]);
      }
    } while (status < 200);
    const field = (n: string): string | undefined => fields.find(([k]) => k === n)?.[1];
    const zerr = field('x-zipline-error');
    const close = /close/i.test(field('connection') ?? '');
    if (method === 'HEAD' || status === 204 || status === 304)
      return { complete: true, status, body: Buffer.alloc(0), zerr, close };
    if (field('transfer-encoding') !== undefined) {
      const parts: Buffer[] = [];
      for (;;) {
        const size = await line();
        const m = size === null ? null : /^([0-9a-fA-F]+)(;.*)?$/.exec(size);
        if (m === null) return { complete: false };
        const n = Number.parseInt(m[1] as string, 16);
        if (n === 0) break;
        const data = await take(n + 2);
        if (data === null || data[n] !== 13 || data[n + 1] !== 10) return { complete: false };
        parts.push(data.subarray(0, n));
      }
      for (let t = await line(); t !== ''; t = await line()) if (t === null) return { complete: false };
      return { complete: true, status, body: Buffer.concat(parts), zerr, close };
    }
    const cl = field('content-length');
    if (cl !== undefined) {
      const body = await take(Number(cl));
      return body === null ? { complete: false } : { complete: true, status, body, zerr, close };
    }
    while (ended === null) await more();
    return ended === 'fin' ? { complete: true, status, body: buf, zerr, close: true } : { complete: false };
  };
}
