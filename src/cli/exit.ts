/** Exit codes of the `zipline` command (docs/OPERATIONS.md). */
import { type ConfigIssue, formatIssue } from '../config/issue.js';

export const EXIT = { ok: 0, config: 1, usage: 2, start: 3, internal: 70 } as const;

/** Reports a refused config on stderr (`check` and `run` alike) and returns its exit code. */
export function reportInvalidConfig(file: string, issues: readonly ConfigIssue[]): number {
  const n = issues.length;
  process.stderr.write(`${file}: ZL_CONFIG_INVALID: ${n} problem${n === 1 ? '' : 's'}\n`);
  for (const i of issues) process.stderr.write(`  ${formatIssue(i)}\n`);
  return EXIT.config;
}
