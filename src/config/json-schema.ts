/**
 * The config's JSON Schema (`zipline schema`), for editors: YAML language servers complete keys,
 * show each key's doc from `reference.ts` on hover, and flag unknown keys, wrong enum values and
 * types as they are typed (`# yaml-language-server: $schema=./zipline.schema.json`). Derived from
 * the same zod schema `zipline check` validates with, so the two cannot drift; `zipline check`
 * stays the authority (cross-field rules, files, what a value means are its alone). A `${NAME}`
 * string is allowed wherever a number or boolean is, as interpolation happens before validation.
 */
import { z } from 'zod';
import { CONFIG_REFERENCE } from './reference.js';
import { configSchema } from './schema.js';

type Node = Record<string, unknown>;

const INTERPOLATED = {
  type: 'string',
  pattern: '\\$\\{[^}]+\\}',
  description: 'an ${ENV} or ${file:PATH} value',
};

export function configJsonSchema(): Node {
  const schema = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Node;
  schema.title = 'zipline configuration';
  return visit(schema, '') as Node;
}

/**
 * Adds the doc of `path` (reference.ts's key syntax: `a.b`, `a.*.b`, `a[].b`) and walks on; the
 * branches of a union share their parent's path and doc (described once, on the parent).
 */
function visit(node: unknown, path: string, describe = true): unknown {
  if (node === null || typeof node !== 'object' || Array.isArray(node)) return node;
  const n = node as Node;
  for (const key of ['oneOf', 'anyOf', 'allOf'] as const) {
    const list = n[key];
    if (Array.isArray(list)) n[key] = list.map((branch) => visit(branch, path, false));
  }
  const props = n.properties as Node | undefined;
  if (props !== undefined) {
    for (const [k, v] of Object.entries(props)) props[k] = visit(v, path === '' ? k : `${path}.${k}`);
  }
  if (typeof n.additionalProperties === 'object')
    n.additionalProperties = visit(n.additionalProperties, `${path}.*`);
  if (n.items !== undefined) n.items = visit(n.items, `${path}[]`);
  const doc = (CONFIG_REFERENCE as Record<string, { doc?: string }>)[path]?.doc;
  if (doc !== undefined && describe) n.description = doc;
  return n.inputAlso === undefined ? allowInterpolation(n) : allowShorthand(n);
}

/** A `z.preprocess` also takes a shorter form (`inputAlso` in schema-values.ts): either, then. */
function allowShorthand(n: Node): Node {
  const { inputAlso, description, default: def, ...rest } = n;
  const out: Node = { anyOf: [allowInterpolation(rest), allowInterpolation(inputAlso as Node)] };
  if (description !== undefined) out.description = description;
  if (def !== undefined) out.default = def;
  return out;
}

const SCALARS = new Set(['string', 'number', 'integer', 'boolean']);
const STRING_RULES = ['minLength', 'maxLength', 'pattern', 'enum', 'format'];

/**
 * A number, boolean, enum or constrained string also takes a `${…}` string (filled in before
 * validation). Not a `const`: the listeners' `protocol` picks their variant.
 */
function allowInterpolation(n: Node): Node {
  const types = Array.isArray(n.type) ? (n.type as string[]) : typeof n.type === 'string' ? [n.type] : [];
  if (types.length === 0 || !types.every((t) => SCALARS.has(t)) || n.const !== undefined) return n;
  const plainString = types.every((t) => t === 'string') && !STRING_RULES.some((r) => n[r] !== undefined);
  if (plainString) return n;
  const { description, default: def, ...rest } = n;
  const out: Node = { anyOf: [rest, INTERPOLATED] };
  if (description !== undefined) out.description = description;
  if (def !== undefined) out.default = def;
  return out;
}
