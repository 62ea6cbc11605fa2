/**
 * `${NAME}` and `${NAME:-default}` in string values (never in keys), and `${file:PATH}`: the
 * contents of a file (a secret mounted by Docker or Kubernetes, say), one trailing newline
 * dropped. `$${` writes a literal `${`. An unset variable without a default, or a file that cannot
 * be read, is reported at the value's path (never with the file's contents); the value is left
 * as is.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { PathSegment } from './load.js';

const VAR_RE = /\$\$\{|\$\{file:([^}]+)\}|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/** A secret is a token or a key, not a data file: a bound on what a config value may pull in. */
export const MAX_SECRET_FILE_BYTES = 64 * 1024;

export function interpolate(
  value: unknown,
  env: NodeJS.ProcessEnv,
  report: (path: readonly PathSegment[], message: string) => void,
  path: PathSegment[] = [],
): unknown {
  if (typeof value === 'string') return interpolateString(value, env, report, path);
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, env, report, [...path, i]));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = interpolate(v, env, report, [...path, k]);
    return out;
  }
  return value;
}

function interpolateString(
  text: string,
  env: NodeJS.ProcessEnv,
  report: (path: readonly PathSegment[], message: string) => void,
  path: readonly PathSegment[],
): string {
  if (!text.includes('${')) return text;
  const problems: string[] = [];
  const out = text.replace(
    VAR_RE,
    (whole: string, file: string | undefined, name: string | undefined, fallback: string | undefined) => {
      if (whole === '$${') return '${';
      if (file !== undefined) {
        const read = readSecretFile(file);
        if (typeof read === 'string') return read;
        problems.push(read.problem);
        return whole;
      }
      const v = env[name as string];
      if (v !== undefined) return v;
      if (fallback !== undefined) return fallback;
      problems.push(`environment variable ${name} is not set (write \${${name}:-default} to give a default)`);
      return whole;
    },
  );
  for (const problem of problems) report(path, problem);
  return out;
}

/** The file's text without one trailing `\n` or `\r\n`, or why not (never its contents). */
function readSecretFile(file: string): string | { problem: string } {
  let fd = -1;
  try {
    fd = openSync(file, 'r');
    const st = fstatSync(fd);
    if (!st.isFile()) return { problem: `${file} is not a regular file` };
    if (st.size > MAX_SECRET_FILE_BYTES) {
      return {
        problem: `${file} is ${st.size} bytes; a \${file:} value is at most ${MAX_SECRET_FILE_BYTES}`,
      };
    }
    // at most the size seen: a file growing meanwhile cannot make the read unbounded
    const buf = Buffer.alloc(st.size);
    let n = 0;
    for (let got = 1; n < buf.length && got > 0; n += got) got = readSync(fd, buf, n, buf.length - n, n);
    return buf.toString('utf8', 0, n).replace(/\r?\n$/, '');
  } catch (err) {
    return { problem: `cannot read file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}` };
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
