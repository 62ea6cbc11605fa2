/** What listeners get from the runtime: the current upstream table, logs, drain state. */
import type { AccessLog, Logger } from '../log/logger.js';
import type { Upstream } from '../upstream/upstream.js';

export interface L4Context {
  readonly log: Logger;
  readonly accessLog: AccessLog;
  /** The upstream of that name in the *current* config generation. */
  upstream(name: string): Upstream | undefined;
  /** A drain has stopped every listener: a connection that still arrives is refused (`ZL_DRAINING`). */
  draining(): boolean;
  /**
   * This process is one of several workers (`workers` > 1): listeners bind their own socket with
   * SO_REUSEPORT on the shared address (Linux).
   */
  readonly reusePort: boolean;
}
