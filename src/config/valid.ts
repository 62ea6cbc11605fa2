/**
 * Helpers over a validated config, which is plain data (what `schema.ts` outputs). Nothing here
 * loads the schema: the serving process imports this, not zod or yaml (config validation runs in
 * a short-lived child process, `load-isolated.ts`).
 */
import type { ListenerConfig } from './schema.js';

/** A listener's name: its `name`, or `protocol:listen` when it has none. */
export function listenerName(
  l: ListenerConfig | { name?: string | undefined; protocol: string; listen?: unknown },
): string {
  return l.name ?? `${l.protocol}:${String(l.listen)}`;
}

/** Whether two config values are the same (they are plain data: what reloads compare). */
export function sameConfig(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Freezes a config and everything in it (it is shared by every part of a generation). */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
