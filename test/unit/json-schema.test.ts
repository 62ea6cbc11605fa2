/**
 * `zipline schema`: the config's JSON Schema for editors. Checked with zod's own JSON Schema
 * reader (a second implementation): it never rejects a config `zipline check` accepts (every full
 * example in README.md and docs/, the quickstart with its `${…}` values as written), it does
 * reject what an editor should flag, and every documented key carries its doc.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { z } from 'zod';
import { configJsonSchema } from '../../src/config/json-schema.js';
import { loadConfigText } from '../../src/config/load.js';
import { CONFIG_REFERENCE } from '../../src/config/reference.js';
import { ROOT, runCli } from '../helpers/zipline.js';

const schema = configJsonSchema();
const validator = z.fromJSONSchema(schema as Parameters<typeof z.fromJSONSchema>[0]);

function accepts(yaml: string): boolean {
  return validator.safeParse(parse(yaml)).success;
}

test('every config example the loader accepts (README, docs/) passes the JSON Schema, and so does the quickstart as written', () => {
  const files = ['README.md', ...readdirSync(join(ROOT, 'docs')).map((f) => join('docs', f))].filter((f) =>
    f.endsWith('.md'),
  );
  let checked = 0;
  for (const file of files) {
    const text = readFileSync(join(ROOT, file), 'utf8');
    for (const [, yaml] of text.matchAll(/```yaml\n([\s\S]*?)```/g)) {
      if (!loadConfigText(yaml as string, { ADDR: '127.0.0.1:1' }).ok) continue; // a fragment
      assert.ok(accepts(yaml as string), `${file}:\n${yaml}`);
      checked++;
    }
  }
  assert.ok(checked >= 10, `${checked} examples`);
  assert.ok(accepts(readFileSync(join(ROOT, 'examples/quickstart.yaml'), 'utf8')));
});

test('the JSON Schema flags what an editor should: unknown keys, values outside an enum, a word for a number; it takes ${…} anywhere and the short forms', () => {
  const rejected = [
    'workers: many',
    'drain_timeout: [1]',
    'upstreams: { u: { balance: round-robin, servers: [a:1] } }',
    'upstreams: { u: { servers: [a:1], keepalive: { max_idle: lots } } }',
    'listeners: [{ name: a, protocol: http, listen: ":1", upstream: u, timeouts: { drain_idel: 1s } }]',
    'listeners: [{ name: a, protocol: htttp, listen: ":1", upstream: u }]',
    'admin: { listen: 127.0.0.1:9901, tokn: x }',
  ];
  for (const yaml of rejected) assert.equal(accepts(yaml), false, yaml);
  const accepted = [
    'workers: ${WORKERS}',
    'workers: auto',
    'upstreams: { u: { servers: [a:1, { address: "b:2", weight: 2 }], tls: true } }',
    'listeners: [{ name: a, protocol: tcp, listen: 6432, upstream: u }]',
    'listeners: [{ name: a, protocol: http, listen: ":1", upstream: u, real_ip_header: X-Forwarded-For }]',
    'admin: { listen: 9901 }',
    'tunnel: { agent: { id: a, relays: ["r:1"], token: "${TOKEN}" } }',
  ];
  for (const yaml of accepted) assert.equal(accepts(yaml), true, yaml);
});

test('every documented key carries its doc as a description', () => {
  const descriptions = new Set<string>();
  const walk = (n: unknown): void => {
    if (n === null || typeof n !== 'object') return;
    const d = (n as { description?: unknown }).description;
    if (typeof d === 'string') descriptions.add(d);
    for (const v of Object.values(n)) walk(v);
  };
  walk(schema);
  const missing = Object.entries(CONFIG_REFERENCE as Record<string, { doc?: string }>)
    .filter(([, k]) => k.doc !== undefined && !descriptions.has(k.doc))
    .map(([path]) => path);
  assert.deepEqual(missing, []);
});

test('zipline schema prints it', async () => {
  const r = await runCli(['schema']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), JSON.parse(JSON.stringify(schema)));
});
