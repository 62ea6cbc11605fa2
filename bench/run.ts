/**
 * `npm run bench -- SUITE`: runs a benchmark suite and writes bench/results/DATE-SUITE.md, and
 * the latest summary into bench/README.md between the suite's markers. Never part of `npm test`.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runHttp } from './http.js';
import { runL4 } from './l4.js';
import { ensurePeers } from './lib/peers.js';
import { runShm } from './shm.js';
import { runTunnel } from './tunnel.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const SUITES: Record<string, (root: string) => Promise<string>> = {
  l4: runL4,
  http: runHttp,
  shm: runShm,
  tunnel: runTunnel,
};

const USAGE = `usage: npm run bench [-- SUITE...]   (suites: l4, http, shm, tunnel; none: all four)

Each suite runs zipline beside its peers (nginx, HAProxy, Caddy, node proxies; shadowsocks-libev
and stunnel for the tunnel), writes bench/results/DATE-SUITE.md and updates bench/README.md.
A suite takes 5-10 minutes. Knobs (environment):
  BENCH_REPS=N              l4, http, tunnel: repetitions (default 3; medians, min-max beside)
  BENCH_SECONDS=S           http: seconds per wrk run (default 5)
  BENCH_RTTS=N              l4, tunnel: round trips per latency run (default 20000)
  BENCH_BULK_BYTES=N        l4, tunnel: bytes per bulk run (default 1 GiB)
  BENCH_UDP_FLOOD=N         l4: datagrams in the UDP flood (default 300000)
  BENCH_SHM_COUNT=N         shm: latency samples (default 20000)
  BENCH_SHM_FLOOD=N         shm: messages in the flood (default 2000000)
  BENCH_ONLY=TEXT           tunnel: only the targets whose name contains TEXT
  BENCH_SCENARIOS=0         tunnel: skip the two application scenarios
  ZIPLINE_BENCH_INSTALL=0   never apt-get missing peers (by default: when run as root)
`;
const args = process.argv.slice(2).filter((a) => a !== '--');
if (args.some((a) => a === '-h' || a === '--help' || a === 'help')) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const names = args;
const chosen = names.length > 0 ? names : Object.keys(SUITES);
const unknown = chosen.filter((n) => SUITES[n] === undefined);
if (unknown.length > 0) {
  process.stderr.write(`unknown suite ${unknown.join(', ')}\n${USAGE}`);
  process.exit(2);
}
// the peers each suite compares with, installed first when they can be (bench/lib/peers.ts)
ensurePeers(chosen, (line) => process.stderr.write(`${line}\n`));
for (const name of chosen) {
  const suite = SUITES[name] as (root: string) => Promise<string>;
  const markdown = await suite(root);
  mkdirSync(join(root, 'bench/results'), { recursive: true });
  const file = join(root, 'bench/results', `${new Date().toISOString().slice(0, 10)}-${name}.md`);
  writeFileSync(file, `# zipline benchmark: ${name}\n\n${markdown}`);
  updateReadme(name, markdown);
  process.stdout.write(`${markdown}\nwritten to ${file}\n`);
}

function updateReadme(name: string, markdown: string): void {
  const readme = join(root, 'bench/README.md');
  const begin = `<!-- bench:${name}:begin -->`;
  const end = `<!-- bench:${name}:end -->`;
  const text = existsSync(readme) ? readFileSync(readme, 'utf8') : '# Benchmarks\n';
  const block = `${begin}\n${markdown}\n${end}`;
  const i = text.indexOf(begin);
  const j = text.indexOf(end);
  writeFileSync(
    readme,
    i >= 0 && j > i ? text.slice(0, i) + block + text.slice(j + end.length) : `${text}\n${block}\n`,
  );
}
