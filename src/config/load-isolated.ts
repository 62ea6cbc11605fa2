/**
 * Config loading for `zipline run`, in a short-lived child process (`validate-main.ts`) at start
 * and at each reload. The schema library and the YAML parser then never load into the serving
 * process (nor into its workers, which get the validated config from the primary): with the
 * schema they were most of its module heap (zod 3.3 MiB, the schema 1.6, yaml 0.8), and loading
 * them grew the young generation too. Start-up peak RSS 79 → 66–67 MiB, anonymous 34 → 22
 * (2026-12-04, three fresh runs each). The outcome comes back `v8.serialize`d (the config is plain
 * data) and is frozen again here. Cost: one Node start per load (start-up +~0.17 s), nothing
 * per request.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { deserialize } from 'node:v8';
import { type ErrorCode, ZiplineError } from '../errors.js';
import type { LoadResult } from './load.js'; // a type: erased, zod is not loaded
import { deepFreeze } from './valid.js';

/** What the validator writes: the loader's result, or why there is none. */
export type IsolatedOutcome =
  | LoadResult
  /** The file could not be read or parsed (`ZL_CONFIG_READ`), or the validator failed. */
  | { readonly ok: false; readonly failure: { readonly code: ErrorCode; readonly message: string } };

const ENTRY = fileURLToPath(new URL('./validate-main.js', import.meta.url));
/** A config's serialized form is kilobytes; this bounds a runaway child. */
const MAX_OUTPUT = 16 * 1024 * 1024;
const MAX_STDERR = 16 * 1024;
export const VALIDATE_TIMEOUT_MS = 30_000;

/**
 * Loads and validates `file` in a child process. Resolves like `loadConfigFile`; rejects with its
 * `ZL_CONFIG_READ`, or `ZL_INTERNAL` when the validator dies, times out or answers nonsense.
 */
export function loadConfigIsolated(file: string, timeoutMs = VALIDATE_TIMEOUT_MS): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [ENTRY, file], {
      stdio: ['ignore', 'pipe', 'pipe'],
      windowsHide: true,
    });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = '';
    let settled = false;
    const fail = (message: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new ZiplineError('ZL_INTERNAL', `config validation: ${message}`));
    };
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    child.stdout.on('data', (c: Buffer) => {
      outBytes += c.length;
      if (outBytes > MAX_OUTPUT) fail(`more than ${MAX_OUTPUT} bytes of output`);
      else out.push(c);
    });
    child.stderr.on('data', (c: Buffer) => {
      if (err.length < MAX_STDERR) err += c.toString('utf8');
    });
    child.on('error', (e) => fail(`could not start ${process.execPath}: ${e.message}`));
    child.on('close', (code, signal) => {
      if (settled) return;
      if (code !== 0 || outBytes === 0) {
        fail(
          `the validator exited with ${signal ?? code}${err === '' ? '' : `: ${err.trim().slice(0, 2000)}`}`,
        );
        return;
      }
      let o: IsolatedOutcome;
      try {
        o = deserialize(Buffer.concat(out)) as IsolatedOutcome;
      } catch (e) {
        fail(`unreadable answer (${(e as Error).message})`);
        return;
      }
      settled = true;
      clearTimeout(timer);
      if (o.ok) resolve({ ok: true, config: deepFreeze(o.config) });
      else if ('issues' in o) resolve({ ok: false, issues: o.issues });
      else reject(new ZiplineError(o.failure.code, o.failure.message));
    });
  });
}
