/**
 * Config loading: YAML text → env interpolation → schema validation → cross-field checks →
 * a deeply frozen result. Every problem is collected (never only the first) and reported as
 * `path.to.key (line L:C): message`, the position taken from the YAML document's node ranges.
 */
import { readFileSync } from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml';
import type { z } from 'zod';
import { ZiplineError } from '../errors.js';
import { crossCheck } from './cross-check.js';
import { interpolate } from './interpolate.js';
import type { ConfigIssue } from './issue.js';
import { configSchema, type ValidConfig } from './schema.js';
import { deepFreeze } from './valid.js';

export type PathSegment = string | number;

export type LoadResult =
  | { readonly ok: true; readonly config: ValidConfig }
  | { readonly ok: false; readonly issues: readonly ConfigIssue[] };

/** Keys users coming from nginx/HAProxy/older drafts write; reported with the right name. */
const RENAMED_KEYS: Readonly<Record<string, string>> = {
  max_conns: 'max_connections',
  proxy_responses: 'responses',
  proxy_timeout: 'client_idle',
  balancer: 'balance',
  lb: 'balance',
  upstream_servers: 'servers',
  backends: 'servers',
  addr: 'address',
  bind: 'listen',
  healthcheck: 'health_check',
  health: 'health_check',
  drain: 'drain_timeout',
  // a key of one protocol's listeners written on another's
  timeouts: 'udp.idle_timeout',
  idle_timeout: 'timeouts.client_idle',
};

/** `name` (or `section.name`) is a key of `shape`. */
function hasKey(shape: Record<string, unknown>, name: string): boolean {
  const [first, second] = name.split('.') as [string, string | undefined];
  if (!Object.hasOwn(shape, first)) return false;
  if (second === undefined) return true;
  const inner = objectShape(shape[first]);
  return inner !== undefined && Object.hasOwn(inner, second);
}

export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? seg : `.${seg}`;
  }
  return out === '' ? '(root)' : out;
}

/** Finds the YAML node for a path; returns the offset of the deepest key or value found. */
function locate(root: Node | null, path: readonly PathSegment[]): number {
  let node: unknown = root;
  let offset = 0;
  const firstRange = (node as { range?: [number, number, number] } | null)?.range;
  if (firstRange) offset = firstRange[0];
  for (const seg of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (pair === undefined) break;
      const keyRange = isScalar(pair.key) ? pair.key.range : undefined;
      if (keyRange) offset = keyRange[0];
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg] as { range?: [number, number, number] } | undefined;
      if (item?.range) offset = item.range[0];
      node = item;
    } else {
      break;
    }
  }
  return offset;
}

function closestKey(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDist = 3;
  for (const k of known) {
    const d = editDistance(key, k);
    if (d < bestDist) {
      bestDist = d;
      best = k;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const prev = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0] as number;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j] as number;
      prev[j] = Math.min(
        (prev[j] as number) + 1,
        (prev[j - 1] as number) + 1,
        diag + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      diag = tmp;
    }
  }
  return prev[b.length] as number;
}

/**
 * The keys the schema accepts at that object; zod tells us only the unknown ones, so we read the
 * shape by walking the schema.
 */
function shapeAt(data: unknown, path: readonly PathSegment[]): Record<string, unknown> {
  let schema: unknown = configSchema;
  let value = data;
  for (const seg of path) {
    schema = childSchema(unionMember(schema, value), seg);
    value = (value as Record<string, unknown> | undefined)?.[seg as string];
  }
  return objectShape(unionMember(schema, value)) ?? {};
}

/** Of a union of objects (a listener by `protocol`), the member whose fields `value` matches. */
function unionMember(schema: unknown, value: unknown): unknown {
  const d = (unwrap(schema) as ZodInternals | undefined)?._zod?.def;
  if (d?.type !== 'union' || typeof value !== 'object' || value === null) return schema;
  const fields = value as Record<string, unknown>;
  for (const option of d.options as unknown[]) {
    const shape = objectShape(option);
    if (shape === undefined) continue;
    const matches = Object.entries(shape).every(([k, field]) => {
      const tag = (unwrap(field) as ZodInternals | undefined)?._zod?.def?.type;
      if (tag !== 'literal' && tag !== 'enum') return true;
      return (field as { safeParse(v: unknown): { success: boolean } }).safeParse(fields[k]).success;
    });
    if (matches) return option;
  }
  return schema;
}

/** `match.path_prefix` for `path_prefix` written one level too high. */
function nestedKey(shape: Record<string, unknown>, key: string): string | undefined {
  for (const [k, child] of Object.entries(shape)) {
    const inner = objectShape(child);
    if (inner !== undefined && Object.hasOwn(inner, key)) return `${k}.${key}`;
  }
  return undefined;
}

interface ZodInternals {
  _zod?: { def?: Record<string, unknown> };
}

function unwrap(schema: unknown): unknown {
  let s = schema as ZodInternals | undefined;
  for (let i = 0; i < 10 && s?._zod?.def; i++) {
    const d = s._zod.def;
    const inner = (d.innerType ?? (d.type === 'pipe' ? d.out : undefined)) as ZodInternals | undefined;
    if (d.type === 'pipe' && (d.in as ZodInternals | undefined)?._zod?.def?.type !== 'transform') {
      s = d.in as ZodInternals;
      continue;
    }
    if (inner === undefined) break;
    s = inner;
  }
  return s;
}

function objectShape(schema: unknown): Record<string, unknown> | undefined {
  const d = (unwrap(schema) as ZodInternals | undefined)?._zod?.def;
  return d?.type === 'object' ? (d.shape as Record<string, unknown>) : undefined;
}

function childSchema(schema: unknown, seg: PathSegment): unknown {
  const d = (unwrap(schema) as ZodInternals | undefined)?._zod?.def;
  if (d === undefined) return undefined;
  if (d.type === 'object') return (d.shape as Record<string, unknown>)[String(seg)];
  if (d.type === 'array') return d.element;
  if (d.type === 'record') return d.valueType;
  return undefined;
}

/** At most this many lines with YAML syntax errors are listed (the rest mostly follow from the first). */
const MAX_YAML_LINES = 5;

/**
 * The YAML parser's errors as issues: the first on each line, for the first MAX_YAML_LINES lines
 * (one mistake in a flow mapping makes an error of every token after it, 30 lines of them), then
 * how many more there were. A `${…}` unquoted in a flow collection, as in
 * `- { listen: ${ADDR} }`, is read by YAML as a nested mapping: that error says to quote it.
 */
function yamlIssues(
  text: string,
  errors: readonly { pos: [number, number]; message: string }[],
  lineCounter: LineCounter,
  issues: ConfigIssue[],
): void {
  const lines = text.split('\n');
  const seen = new Set<number>();
  const hidden = new Set<number>();
  let firstHidden = { line: 0, col: 0 };
  let hinted = false;
  for (const e of errors) {
    const pos = lineCounter.linePos(e.pos[0]);
    if (seen.has(pos.line) || hidden.has(pos.line)) continue;
    if (seen.size === MAX_YAML_LINES) {
      if (hidden.size === 0) firstHidden = pos;
      hidden.add(pos.line);
      continue;
    }
    seen.add(pos.line);
    let message = e.message.split('\n')[0] ?? e.message;
    if (!hinted && /[{[][^}\]]*\$\{/.test(lines[pos.line - 1] ?? '')) {
      hinted = true;
      message += ' (inside { } or [ ], a value with ${…} must be quoted: "${NAME}")';
    }
    issues.push({ path: '(yaml)', line: pos.line, col: pos.col, message });
  }
  if (hidden.size > 0) {
    const n = hidden.size;
    issues.push({
      path: '(yaml)',
      line: firstHidden.line,
      col: firstHidden.col,
      message: `and errors on ${n} more line${n === 1 ? '' : 's'} from here (often consequences of the first)`,
    });
  }
}

export function loadConfigText(text: string, env: NodeJS.ProcessEnv = process.env): LoadResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const issues: ConfigIssue[] = [];
  const at = (path: readonly PathSegment[], message: string): void => {
    const pos = lineCounter.linePos(locate(doc.contents, path));
    issues.push({ path: formatPath(path), line: pos.line, col: pos.col, message });
  };
  if (doc.errors.length > 0) {
    yamlIssues(text, doc.errors, lineCounter, issues);
    return { ok: false, issues };
  }
  let raw: unknown;
  try {
    // throws on unresolved aliases and on alias expansion beyond maxAliasCount (billion laughs)
    raw = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (err) {
    issues.push({ path: '(yaml)', line: 1, col: 1, message: (err as Error).message });
    return { ok: false, issues };
  }
  const badEnvPaths = new Set<string>();
  const data = interpolate(raw, env, (path, message) => {
    badEnvPaths.add(formatPath(path));
    at(path, message);
  });

  const parsed = configSchema.safeParse(data);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) addZodIssue(issue, data, badEnvPaths, at);
  }
  crossCheck(data, at);
  if (issues.length > 0 || !parsed.success) {
    issues.sort((a, b) => a.line - b.line || a.col - b.col);
    return { ok: false, issues };
  }
  return { ok: true, config: deepFreeze(parsed.data) };
}

function addZodIssue(
  issue: z.core.$ZodIssue,
  data: unknown,
  badEnvPaths: ReadonlySet<string>,
  at: (path: readonly PathSegment[], message: string) => void,
): void {
  const path = issue.path.filter((s): s is PathSegment => typeof s !== 'symbol');
  // already reported as a missing variable, at this value or one it was made from (a server
  // written as a string becomes `{ address }`)
  for (let n = path.length; n >= 1; n--) if (badEnvPaths.has(formatPath(path.slice(0, n)))) return;
  if (issue.code === 'unrecognized_keys') {
    const shape = shapeAt(data, path);
    const known = Object.keys(shape);
    for (const key of issue.keys) {
      const renamed = RENAMED_KEYS[key];
      const guess =
        renamed !== undefined && hasKey(shape, renamed)
          ? renamed
          : (closestKey(key, known) ?? nestedKey(shape, key));
      at([...path, key], `unknown key "${key}"${guess ? `; did you mean "${guess}"?` : ''}`);
    }
    return;
  }
  if (issue.code === 'invalid_union' && path[path.length - 1] !== 'protocol' && isDiscriminatorMiss(issue)) {
    at([...path, 'protocol'], 'unknown protocol: use tcp, udp, http, https, socks5 or http_proxy');
    return;
  }
  at(path, issue.message);
}

function isDiscriminatorMiss(issue: z.core.$ZodIssue): boolean {
  return issue.code === 'invalid_union' && (issue as { note?: string }).note === 'No matching discriminator';
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ZiplineError('ZL_CONFIG_READ', `cannot read ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return loadConfigText(text, env);
}
