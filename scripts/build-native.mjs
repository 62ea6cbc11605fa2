// `npm install` runs this (the package's `install` script): builds the optional native parts
// with node-gyp against the local Node headers (nothing is downloaded). Linux only for now; a
// failed build is reported and zipline falls back to its JavaScript data path.
import { spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
if (process.platform !== 'linux') {
  console.log(`zipline: native pump is Linux-only; skipped on ${process.platform} (the JS data path is used)`);
  process.exit(0);
}
const nodedir = resolve(process.execPath, '../..');
const gyp = resolve(root, 'node_modules/node-gyp/bin/node-gyp.js');
const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`, '--jobs=max'], {
  cwd: root,
  stdio: 'inherit',
});
if (r.status !== 0) {
  console.warn('zipline: building the native pump failed; the JavaScript data path will be used');
}
process.exit(0);
