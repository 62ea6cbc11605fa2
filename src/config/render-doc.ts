/** Renders docs/CONFIG.md from `CONFIG_REFERENCE`; a test keeps the committed file identical. */
import { CONFIG_REFERENCE, type KeyDoc } from './reference.js';

function fmt(v: KeyDoc['default']): string {
  if (v === undefined) return '—';
  if (Array.isArray(v)) return `\`[${v.join(', ')}]\``;
  return v === '' ? '`""`' : `\`${String(v)}\``;
}

export function renderConfigDoc(): string {
  const rows = Object.entries(CONFIG_REFERENCE).map(
    ([path, d]: [string, KeyDoc]) => `| \`${path}\` | ${fmt(d.default)} | ${d.doc.replaceAll('|', '\\|')} |`,
  );
  return [
    '# Configuration reference',
    '',
    '<!-- generated from src/config/reference.ts by `npm run docs`; do not edit by hand -->',
    '',
    'zipline reads one YAML file (`zipline run -c FILE`, `zipline check -c FILE`). The rules:',
    '',
    '- **Durations** are strings with a unit: `250ms`, `3s`, `1.5m`, `2h`, `1d` (`0` where zero is allowed). A bare number such as `3` is refused: nginx would read it as seconds and HAProxy as milliseconds.',
    '  **Sizes**: `512`, `16KiB`, `8MiB`, `1GB`. **Shares**: `20%`.',
    '- **Environment**: `${NAME}` in any value is replaced by the variable; an unset one is an error',
    '  unless written `${NAME:-default}`. `$${` writes a literal `${`. Keys are never interpolated.',
    '  Inside a flow mapping or list (`{ … }`, `[ … ]`) YAML reads `{` as the start of a mapping: quote',
    '  such values there, `- { name: web, listen: "${ADDR}", upstream: app }`.',
    '- **Files**: `${file:PATH}` is replaced by the contents of the file (one trailing newline dropped;',
    '  at most 64 KiB; a relative path is from the working directory), read at start, by `zipline',
    '  check` and at each reload: how secrets mounted as files (Docker, Kubernetes) reach tokens.',
    '  A file that cannot be read is an error at that value; its contents are never printed.',
    '- **Strict**: unknown keys are errors (with a "did you mean" hint, also for names from nginx such',
    '  as `max_conns`, for a key written one level too high: `path_prefix` in a route is',
    '  `match.path_prefix`, and for a timeout key of another protocol: `timeouts` on a udp listener',
    '  is `udp.idle_timeout`, `idle_timeout` on a tcp one `timeouts.client_idle`), and so are',
    '  sections this build does not implement yet: nothing is silently ignored.',
    '- **Every problem at once**: `zipline check` prints each as `path.to.key (line L:C): message` and',
    '  exits 1 (YAML syntax errors: the first on each line, for five lines). Cross-field checks:',
    '  listeners name defined upstreams; names are unique, and so are the',
    "  TCP/UDP addresses of listeners, the admin server (its default too), shm bridges' APIs and the",
    "  tunnel's relay and entries (a wildcard `0.0.0.0` overlaps every IPv4 address on its port, `::`",
    '  every address); a health-check `timeout` is shorter than its `interval`; `retry.backoff.base ≤ max`;',
    '  no duplicate servers in an upstream.',
    '- **Reload** (SIGHUP or `POST /reload`): see docs/OPERATIONS.md.',
    '- **In an editor**: `zipline schema > zipline.schema.json` writes the JSON Schema of this file',
    '  (from the same schema `check` uses, each key with its doc below); with the YAML language server',
    "  (VS Code's YAML extension, Neovim, Helix) put `# yaml-language-server: $schema=./zipline.schema.json`",
    '  on the first line for completion, hover docs and errors as you type. `${…}` values are taken',
    '  anywhere; `zipline check` remains the authority (cross-field rules and files are its alone).',
    '',
    '`*` stands for a map key (an upstream name), `[]` for an array element.',
    '',
    '| key | default | meaning |',
    '|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}
