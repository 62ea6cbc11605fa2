/**
 * The serving process (`zipline run`, and each worker) must not load the config schema library
 * or the YAML parser: config is validated in a child process (src/config/load-isolated.ts), and
 * those modules were most of the serving process's module heap. Checked on the compiled static
 * import graph (dynamic `import()`s, as `zipline check` makes, are not followed).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const DIST_SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

/** The packages that `entry` imports statically, through every relative module it imports. */
function staticPackages(entry: string, minModules: number): Set<string> {
  const seen = new Set<string>();
  const packages = new Set<string>();
  const stack = [resolve(DIST_SRC, entry)];
  for (let file = stack.pop(); file !== undefined; file = stack.pop()) {
    if (seen.has(file)) continue;
    seen.add(file);
    const source = readFileSync(file, 'utf8');
    const specifiers = [
      ...source.matchAll(/^(?:import|export)\s[^;]*?from\s+['"]([^'"]+)['"]/gms),
      ...source.matchAll(/^import\s+['"]([^'"]+)['"]/gm),
    ].map((m) => m[1] as string);
    for (const spec of specifiers) {
      if (spec.startsWith('.')) stack.push(resolve(dirname(file), spec));
      else if (!spec.startsWith('node:')) packages.add(spec);
    }
  }
  assert.ok(
    seen.size >= minModules,
    `only ${seen.size} modules found from ${entry}: is the graph walk broken?`,
  );
  return packages;
}

for (const entry of ['cli/main.js', 'workers/worker-main.js']) {
  test(`${entry}: no zod or yaml in the static import graph`, () => {
    const packages = staticPackages(entry, 50);
    assert.ok(packages.has('prom-client'), 'the walk reaches the metrics catalog');
    assert.ok(!packages.has('zod'), `zod is imported statically from ${entry}`);
    assert.ok(!packages.has('yaml'), `yaml is imported statically from ${entry}`);
  });
}

test('the validator child itself does load them (the walk sees through re-exports)', () => {
  const packages = staticPackages('config/validate-main.js', 5);
  assert.ok(packages.has('zod') && packages.has('yaml'));
});
