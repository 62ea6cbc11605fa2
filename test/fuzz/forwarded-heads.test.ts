/**
 * What crosses the proxy, differentially: random heads made of end-to-end, hop-by-hop,
 * Connection-named and forwarding fields (names in random case) go through the builders of the
 * upstream request head and the client response head, and the fields that come out are compared
 * with a plain reference filter over lower-case names. An end-to-end field must come out byte
 * for byte, in order, whatever ids the parser gives names (User-Agent and Referer were dropped
 * once when they gained ids for the access log). Deterministic (seeded).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildForwardHead, type HeaderRules } from '../../src/http/forward-head.js';
import { buildClientHead } from '../../src/http/forward-response.js';
import { findHeadEnd, parseRequestHead } from '../../src/http/parser/request-head.js';
import { parseResponseHead } from '../../src/http/parser/response-head.js';
import { rng } from '../helpers/rng.js';

const END_TO_END = [
  'user-agent',
  'referer',
  'accept',
  'accept-encoding',
  'accept-language',
  'cookie',
  'authorization',
  'content-type',
  'cache-control',
  'if-none-match',
  'origin',
  'idempotency-key',
  'retry-after',
  'set-cookie',
  'server',
  'location',
  'etag',
  'vary',
  'x-custom',
  'x-trace',
  'proxy-authenticate-not', // a prefix of a hop-by-hop name is another name
  'hostname',
];
const HOP_BY_HOP_REQUEST = ['keep-alive', 'proxy-connection', 'te', 'trailer', 'proxy-authorization'];
const HOP_BY_HOP_RESPONSE = ['keep-alive', 'proxy-connection', 'te', 'proxy-authenticate'];
const FORWARDING = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-real-ip', 'x-request-id'];
const NO_RULES: HeaderRules = { remove: new Set(), set: new Map(), setNames: new Set() };

function randomCase(name: string, r: () => number): string {
  return [...name].map((c) => (r() < 0.5 ? c.toUpperCase() : c)).join('');
}

function pick<T>(list: readonly T[], r: () => number): T {
  return list[Math.floor(r() * list.length)] as T;
}

interface Generated {
  /** The field lines, in order. */
  readonly lines: string[];
  /** Lower-case names the Connection field names. */
  readonly named: Set<string>;
}

function fields(r: () => number, hopByHop: readonly string[], extra: readonly string[]): Generated {
  const lines: string[] = [];
  const named = new Set<string>();
  const n = Math.floor(r() * 12);
  for (let i = 0; i < n; i++) {
    const roll = r();
    let name: string;
    if (roll < 0.6) name = pick(END_TO_END, r);
    else if (roll < 0.75) name = pick(hopByHop, r);
    else if (roll < 0.85) name = pick(extra, r);
    else {
      // Connection naming an end-to-end field makes it hop-by-hop for this message
      const victim = pick(END_TO_END, r);
      named.add(victim);
      lines.push(
        `${randomCase('connection', r)}: ${r() < 0.5 ? 'keep-alive, ' : ''}${randomCase(victim, r)}`,
      );
      continue;
    }
    const value = `v${i}${r() < 0.2 ? ' with "quotes", commas; and=signs' : ''}`;
    lines.push(`${randomCase(name, r)}:${r() < 0.8 ? ' ' : ''}${value}`);
  }
  return { lines, named };
}

/** The reference: the lines whose lower-case name is in none of the dropped sets, in order. */
function expected(g: Generated, dropped: readonly string[]): string[] {
  return g.lines.filter((l) => {
    const name = (l.slice(0, l.indexOf(':')) as string).toLowerCase();
    return name !== 'connection' && !dropped.includes(name) && !g.named.has(name);
  });
}

test('upstream request heads carry every end-to-end field as sent, in order', () => {
  const r = rng(0x5eed_f00d);
  for (let i = 0; i < 20_000; i++) {
    const g = fields(r, HOP_BY_HOP_REQUEST, FORWARDING);
    const text = `GET /p HTTP/1.1\r\nHost: h.test\r\n${g.lines.map((l) => `${l}\r\n`).join('')}\r\n`;
    const buf = Buffer.from(text, 'latin1');
    const req = parseRequestHead(buf, findHeadEnd(buf, buf.length, 1 << 16));
    const ctx = { clientIp: '192.0.2.1', realIp: '192.0.2.1', proto: 'http' as const, trusted: false };
    const out = buildForwardHead(req, { ...ctx, path: '/p', rules: NO_RULES }).head;
    const lines = out.split('\r\n');
    assert.equal(lines[0], 'GET /p HTTP/1.1');
    assert.equal(lines[1], 'Host: h.test');
    const kept = lines.slice(2, lines.indexOf(`X-Forwarded-For: ${ctx.clientIp}`));
    assert.deepEqual(kept, expected(g, [...HOP_BY_HOP_REQUEST, ...FORWARDING]), text);
  }
});

test('client response heads carry every end-to-end field as sent, in order', () => {
  const r = rng(0xc0ffee);
  for (let i = 0; i < 20_000; i++) {
    const g = fields(r, HOP_BY_HOP_RESPONSE, ['upgrade', 'transfer-encoding-x']);
    const text = `HTTP/1.1 200 OK\r\n${g.lines.map((l) => `${l}\r\n`).join('')}Content-Length: 2\r\n\r\n`;
    const buf = Buffer.from(text, 'latin1');
    const resp = parseResponseHead(buf, findHeadEnd(buf, buf.length, 1 << 16), 'GET');
    const out = buildClientHead(resp, { framing: 'same', keepAlive: true, clientMinor: 1, rules: NO_RULES });
    const lines = out.split('\r\n');
    assert.equal(lines[0], 'HTTP/1.1 200 OK');
    const kept = lines.slice(1, lines.indexOf('Content-Length: 2'));
    assert.deepEqual(kept, expected(g, [...HOP_BY_HOP_RESPONSE, 'upgrade']), text);
  }
});
