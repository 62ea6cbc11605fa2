/** What `POST /reload` and SIGHUP answer (docs/OPERATIONS.md). */
import type { ErrorCode } from '../errors.js';

export interface ReloadReport {
  readonly result: 'applied' | 'refused' | 'partial';
  /** `ZL_RELOAD_REFUSED` when refused. */
  readonly error?: ErrorCode;
  readonly errors: readonly string[];
  readonly listeners: { added: string[]; removed: string[]; changed: string[]; rebound: string[] };
  readonly upstreams: { added: string[]; removed: string[]; changed: string[] };
}

/** A reload that changed nothing, and why. */
export function refused(errors: string[]): ReloadReport {
  return {
    result: 'refused',
    error: 'ZL_RELOAD_REFUSED',
    errors,
    listeners: { added: [], removed: [], changed: [], rebound: [] },
    upstreams: { added: [], removed: [], changed: [] },
  };
}
