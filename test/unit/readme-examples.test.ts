/** Every configuration example in README.md is a config `zipline check` accepts: the examples cannot drift from the schema. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfigText } from '../../src/config/load.js';
import { ROOT } from '../helpers/zipline.js';

test("README.md's YAML examples validate", () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] as string);
  assert.ok(blocks.length >= 3, 'the README shows its examples');
  for (const yaml of blocks) {
    const r = loadConfigText(yaml, {});
    assert.ok(r.ok, `${yaml}\n${r.ok ? '' : r.issues.map((i) => `${i.path}: ${i.message}`).join('\n')}`);
  }
});
