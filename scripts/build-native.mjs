// `npm install` runs this (the package's `install` script): builds the optional native parts
// with node-gyp against the local Node headers (nothing is downloaded):
// - the optional zstd module (`zstd-napi`, for `tunnel.agent.compression: zstd`) when its own
//   install could not build it (its prebuilt download and its node-gyp fallback both need the
//   network); without it the tunnel runs uncompressed and says so. It goes first: the native
//   tunnel engine links the static zstd library that its build leaves behind;
// - zipline's addons (Linux only; a failed build is reported and zipline falls back to its
//   JavaScript data paths): the pump, shared memory, the CRC and the tunnel engine. The tunnel
//   engine needs the OpenSSL headers that Node's own headers ship (include/node/openssl); where
//   they are missing it is skipped and the tunnel runs in JavaScript.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const nodedir = resolve(process.execPath, '../..');
const gyp = resolve(root, 'node_modules/node-gyp/bin/node-gyp.js');

function gypRebuild(cwd, gypArgs = []) {
  const args = [gyp, 'rebuild', `--nodedir=${nodedir}`, '--jobs=max'];
  if (gypArgs.length > 0) args.push('--', ...gypArgs);
  return spawnSync(process.execPath, args, { cwd, stdio: 'inherit' });
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

if (process.platform !== 'linux') {
  console.log(`zipline: native parts are Linux-only; skipped on ${process.platform} (the JS data paths are used)`);
} else {
  const openssl = existsSync(resolve(nodedir, 'include/node/openssl/ssl.h'));
  const zstdLib = resolve(zstdDir, 'build/Release/zstd.a');
  const zstdInclude = resolve(zstdDir, 'deps/zstd/lib');
  const zstd = existsSync(zstdLib) && existsSync(resolve(zstdInclude, 'zstd.h'));
  const vars = [`-Dtunnel=${openssl ? 1 : 0}`];
  if (zstd) vars.push(`-Dzstd_lib=${zstdLib}`, `-Dzstd_include=${zstdInclude}`);
  if (!openssl) console.log("zipline: Node's OpenSSL headers are missing; the tunnel runs in JavaScript");
  else if (!zstd) console.log('zipline: no zstd library to link; the native tunnel negotiates no compression');
  if (gypRebuild(root, vars).status !== 0) {
    console.warn('zipline: building the native parts failed; the JavaScript data paths will be used');
  }
}
process.exit(0);
