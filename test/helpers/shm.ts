/** Building the shared-memory C tools for tests, and naming segments that are cleaned up. */
import { execFile, execFileSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './temp.js';
import { ROOT } from './zipline.js';

export interface ShmTools {
  readonly stress: string;
  readonly example: string;
  /** native/lib/zipline_shm.c compiled as C (`cc -c`), for programs in other languages to link. */
  readonly libObject: string;
  /** A scratch directory, removed by `cleanup()`. */
  readonly dir: string;
  /** A fresh segment name, removed by `cleanup()`. */
  segment(): string;
  /** Runs the stress tool; resolves with the JSON it printed last. */
  run(args: string[]): Promise<Record<string, unknown>>;
  /** Removes the tools and every segment named; returns the segments still in /dev/shm. */
  cleanup(): string[];
}

export function buildShmTools(): ShmTools {
  const dir = tempDir('zl-shm-');
  const stress = join(dir, 'shm_stress');
  const example = join(dir, 'shm_example');
  const lib = join(ROOT, 'native/lib/zipline_shm.c');
  const libObject = join(dir, 'zipline_shm.o');
  const inc = ['-I', join(ROOT, 'native/include')];
  execFileSync('cc', ['-std=c11', '-O2', '-Wall', '-Werror', ...inc, '-c', lib, '-o', libObject]);
  execFileSync('cc', [
    '-std=c11',
    '-O2',
    '-Wall',
    '-Werror',
    ...inc,
    join(ROOT, 'native/examples/shm_stress.c'),
    libObject,
    '-o',
    stress,
  ]);
  // the one-line build docs/SHM.md promises for a C program
  execFileSync('cc', [
    '-std=c11',
    '-O2',
    ...inc,
    join(ROOT, 'native/examples/shm_example.c'),
    lib,
    '-o',
    example,
  ]);
  const prefix = `zl-test-${process.pid}-${Math.floor(Math.random() * 1e6)}-`;
  let n = 0;
  const names: string[] = [];
  return {
    stress,
    example,
    libObject,
    dir,
    segment() {
      const name = `/${prefix}${n++}`;
      names.push(name);
      return name;
    },
    run(args) {
      return new Promise((resolve, reject) => {
        execFile(stress, args, { timeout: 30_000 }, (err, stdout) => {
          if (err) reject(err);
          else resolve(JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>);
        });
      });
    },
    cleanup() {
      for (const name of names) rmSync(`/dev/shm${name}`, { force: true });
      rmSync(dir, { recursive: true, force: true });
      return readdirSync('/dev/shm').filter((f) => f.startsWith(prefix));
    },
  };
}
