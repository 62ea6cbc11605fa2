/**
 * `npm test`: runs every compiled test file under dist/test with node:test.
 * (On Node 20, `node --test DIR` with TypeScript finds nothing; we test the compiled JS.)
 * On Linux the whole suite runs twice: with the native parts (splice pump, native accept, UDP
 * thread, CRC-32), then as the portable pass with `ZIPLINE_NO_NATIVE=1`, on the JavaScript paths
 * Windows and macOS run (tests that need a native part skip themselves there).
 * Usage: node dist/scripts/run-tests.js [substring ...] to run only matching files, once.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../test/', import.meta.url));

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const filters = process.argv.slice(2);
const files = walk(root).filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)));
if (files.length === 0) {
  process.stderr.write('no test files matched\n');
  process.exit(1);
}
function pass(env: NodeJS.ProcessEnv): number {
  const r = spawnSync(
    process.execPath,
    ['--test', '--test-concurrency=2', '--test-timeout=120000', '--test-reporter=spec', ...files],
    { stdio: 'inherit', env: { ...process.env, ...env } },
  );
  return r.status ?? 1;
}

let status = pass({});
if (filters.length === 0 && process.platform === 'linux' && process.env.ZIPLINE_NO_NATIVE !== '1') {
  process.stdout.write('\n# the portable pass: ZIPLINE_NO_NATIVE=1 (the JavaScript data paths)\n');
  const portable = pass({ ZIPLINE_NO_NATIVE: '1' });
  if (status === 0) status = portable;
}
process.exit(status);
