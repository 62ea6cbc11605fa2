/** What listeners get from the runtime: the current upstream table, logs, drain state. */
import type { AccessLog, Logger } from '../log/logger.js';
import type { Upstream } from '../upstream/upstream.js';

export interface L4Context {
  readonly log: Logger;
  readonly accessLog: AccessLog;
  /** The upstream of that name in the *current* config generation. */
  upstream(name: string): Upstream | undefined;
  draining(): boolean;
}
