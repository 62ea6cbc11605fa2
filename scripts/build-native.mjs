// `npm install` runs this (the package's `install` script): builds the optional native parts
// with node-gyp against the local Node headers (nothing is downloaded):
// - the native pump (Linux only; a failed build is reported and zipline falls back to its
//   JavaScript data path);
// - the optional zstd module (`zstd-napi`, for `tunnel.agent.compression: zstd`) when its own
//   install could not build it (its prebuilt download and its node-gyp fallback both need the
//   network); without it the tunnel runs uncompressed and says so.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const nodedir = resolve(process.execPath, '../..');
const gyp = resolve(root, 'node_modules/node-gyp/bin/node-gyp.js');

function gypRebuild(cwd) {
  return spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`, '--jobs=max'], { cwd, stdio: 'inherit' });
}

if (process.platform !== 'linux') {
  console.log(`zipline: native pump is Linux-only; skipped on ${process.platform} (the JS data path is used)`);
} else if (gypRebuild(root).status !== 0) {
  console.warn('zipline: building the native pump failed; the JavaScript data path will be used');
}

const zstdDir = resolve(root, 'node_modules/zstd-napi');
if (existsSync(zstdDir)) {
  const require = createRequire(resolve(root, 'package.json'));
  let loads = false;
  try {
    require('zstd-napi/binding');
    loads = true;
  } catch {
    loads = false;
  }
  if (!loads && existsSync(gyp)) {
    console.log('zipline: building the optional zstd module against the local Node headers');
    if (gypRebuild(zstdDir).status !== 0) {
      console.warn('zipline: zstd could not be built; tunnel compression will be unavailable');
    }
  }
}
process.exit(0);
