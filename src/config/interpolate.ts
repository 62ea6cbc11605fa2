/**
 * `${NAME}` and `${NAME:-default}` in string values (never in keys). `$${` writes a literal `${`.
 * An unset variable without a default is reported at the value's path; the value is left as is.
 */
import type { PathSegment } from './load.js';

const VAR_RE = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

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
  const missing: string[] = [];
  const out = text.replace(
    VAR_RE,
    (whole: string, name: string | undefined, fallback: string | undefined) => {
      if (whole === '$${') return '${';
      const v = env[name as string];
      if (v !== undefined) return v;
      if (fallback !== undefined) return fallback;
      missing.push(name as string);
      return whole;
    },
  );
  for (const name of missing) {
    report(path, `environment variable ${name} is not set (write \${${name}:-default} to give a default)`);
  }
  return out;
}
