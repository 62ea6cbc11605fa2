/** A config problem as `check` and `run` report it: where (path, line, column) and what. */
export interface ConfigIssue {
  readonly path: string;
  readonly line: number;
  readonly col: number;
  readonly message: string;
}

export function formatIssue(issue: ConfigIssue): string {
  return `${issue.path} (line ${issue.line}:${issue.col}): ${issue.message}`;
}
