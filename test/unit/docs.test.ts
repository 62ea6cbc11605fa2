/** The reference docs are generated from code; these tests keep code, docs and schema in step. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { GENERATED } from '../../scripts/gen-docs.js';
import { CONFIG_REFERENCE } from '../../src/config/reference.js';
import { configSchema } from '../../src/config/schema.js';
import { ZIPLINE_VERSION } from '../../src/version.js';
import { ROOT } from '../helpers/zipline.js';

for (const [name, render] of Object.entries(GENERATED)) {
  test(`docs/${name} matches the code (run \`npm run docs\` after changing it)`, () => {
    assert.equal(readFileSync(join(ROOT, 'docs', name), 'utf8'), render());
  });
}

type Def = { type: string; [k: string]: unknown };
const defOf = (s: unknown): Def => (s as { _zod: { def: Def } })._zod.def;

/** Every key path the schema accepts, in the reference's notation. */
function keyPaths(schema: unknown, prefix: string, out: Set<string>): void {
  const d = defOf(schema);
  switch (d.type) {
    case 'optional':
    case 'prefault':
    case 'default':
    case 'nullable':
      keyPaths(d.innerType, prefix, out);
      return;
    case 'pipe':
      keyPaths(defOf(d.in).type === 'transform' ? d.out : d.in, prefix, out);
      return;
    case 'object':
      for (const [k, v] of Object.entries(d.shape as Record<string, unknown>)) {
        const p = prefix ? `${prefix}.${k}` : k;
        out.add(p);
        keyPaths(v, p, out);
      }
      return;
    case 'array':
      out.add(`${prefix}[]`);
      keyPaths(d.element, `${prefix}[]`, out);
      return;
    case 'record':
      out.add(`${prefix}.*`);
      keyPaths(d.valueType, `${prefix}.*`, out);
      return;
    case 'union':
      for (const o of d.options as unknown[]) keyPaths(o, prefix, out);
      return;
    default:
      return;
  }
}

test('every config key the schema accepts is documented, and every documented key exists', () => {
  const paths = new Set<string>();
  keyPaths(configSchema, '', paths);
  // arrays of scalars are documented by their key, not element
  const scalarArrays = [
    'upstreams.*.health_check.expect_status[]',
    'upstreams.*.retry.on[]',
    'listeners[].trusted_proxies[]',
    'listeners[].proxy_protocol.from[]',
    'tunnel.relay.proxy_protocol.from[]',
    'listeners[].clients.allow[]',
    'listeners[].clients.deny[]',
    'listeners[].routes[].clients.allow[]',
    'listeners[].routes[].clients.deny[]',
    'tunnel.relay.clients.allow[]',
    'tunnel.relay.clients.deny[]',
    'listeners[].tls.alpn[]',
    'listeners[].allow[]',
    'tunnel.relay.tokens[]',
    'tunnel.relay.allow[]',
    'listeners[].routes[].headers.request.remove[]',
    'listeners[].routes[].headers.response.remove[]',
    // header maps: any field name
    'listeners[].routes[].headers.request.set.*',
    'listeners[].routes[].headers.response.set.*',
    'listeners[].routes[].match.headers.*',
    'listeners[].routes[].match.methods[]',
  ];
  for (const p of scalarArrays) paths.delete(p);
  const documented = new Set(Object.keys(CONFIG_REFERENCE));
  assert.deepEqual(
    [...paths].filter((p) => !documented.has(p)),
    [],
    'keys missing from reference.ts',
  );
  assert.deepEqual(
    [...documented].filter((p) => !paths.has(p)),
    [],
    'reference.ts names keys the schema lacks',
  );
});

test('version matches package.json', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  assert.equal(ZIPLINE_VERSION, pkg.version);
});
