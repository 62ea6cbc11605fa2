/**
 * The config validator's process (`load-isolated.ts` starts it): loads the file named in argv
 * (YAML, env interpolation, schema, cross-checks) and writes the outcome to stdout, serialized
 * with `v8.serialize`. It exits when the write is done.
 */
import { serialize } from 'node:v8';
import { isZiplineError } from '../errors.js';
import { loadConfigFile } from './load.js';
import type { IsolatedOutcome } from './load-isolated.js';

function outcome(file: string): IsolatedOutcome {
  try {
    return loadConfigFile(file);
  } catch (err) {
    const code = isZiplineError(err) ? err.code : 'ZL_INTERNAL';
    return { ok: false, failure: { code, message: (err as Error).message } };
  }
}

process.stdout.write(serialize(outcome(process.argv[2] ?? '')));
