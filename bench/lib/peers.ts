/**
 * The tools and peers each suite runs beside zipline, and getting them onto a Debian machine so
 * that `npm run bench` on a fresh one measures every peer rather than skipping them: missing ones
 * are installed with apt-get when we are root (as `.ci/run` does for the tests), otherwise listed
 * with the command that installs them. `ZIPLINE_BENCH_INSTALL=0` never installs.
 */
import { spawnSync } from 'node:child_process';
import { have, nginxModule } from './proc.js';

interface Need {
  /** What is missing, as the report says it. */
  readonly what: string;
  readonly present: () => boolean;
  /** Debian packages that provide it. */
  readonly packages: readonly string[];
}

const cmd = (name: string, ...packages: string[]): Need => ({
  what: name,
  present: () => have(name),
  packages,
});

const CC = cmd('cc', 'gcc', 'libc6-dev');
const NGINX = cmd('nginx', 'nginx-light');
const HAPROXY = cmd('haproxy', 'haproxy');

/** Per suite; a peer left missing is skipped with a note in its report (wrk and nginx are required for http). */
const NEEDS: Record<string, readonly Need[]> = {
  l4: [
    CC,
    NGINX,
    {
      what: 'nginx stream module',
      present: () => nginxModule('stream') !== null,
      packages: ['nginx-light', 'libnginx-mod-stream'],
    },
    HAPROXY,
  ],
  http: [cmd('wrk', 'wrk'), NGINX, HAPROXY, cmd('caddy', 'caddy')],
  tunnel: [CC, cmd('ss-server', 'shadowsocks-libev'), cmd('stunnel', 'stunnel4')],
  shm: [CC],
};

/** The needs of `suites` that are not met, each once. */
export function missingFor(suites: readonly string[]): Need[] {
  const seen = new Set<string>();
  const out: Need[] = [];
  for (const s of suites) {
    for (const n of NEEDS[s] ?? []) {
      if (seen.has(n.what)) continue;
      seen.add(n.what);
      if (!n.present()) out.push(n);
    }
  }
  return out;
}

/**
 * Installs what `suites` miss when it can (root, apt-get, not turned off); says what is still
 * missing and how to get it. Returns the needs still missing.
 */
export function ensurePeers(suites: readonly string[], log: (line: string) => void): Need[] {
  let missing = missingFor(suites);
  if (missing.length === 0) return missing;
  const packages = [...new Set(missing.flatMap((n) => n.packages))];
  const root = process.getuid?.() === 0;
  if (root && have('apt-get') && process.env.ZIPLINE_BENCH_INSTALL !== '0') {
    log(`bench: installing ${packages.join(' ')} (missing: ${missing.map((n) => n.what).join(', ')})`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const run = (args: string[]): boolean =>
      spawnSync('apt-get', args, { env, stdio: ['ignore', 'ignore', 'inherit'] }).status === 0;
    if (!run(['update', '-qq']) || !run(['install', '-y', '-qq', '--no-install-recommends', ...packages])) {
      log('bench: apt-get failed; the peers still missing are skipped');
    }
    missing = missingFor(suites);
    if (missing.length === 0) return missing;
  }
  const still = [...new Set(missing.flatMap((n) => n.packages))];
  log(
    `bench: missing ${missing.map((n) => n.what).join(', ')}: ${root ? '' : 'sudo '}apt-get install ${still.join(' ')}` +
      ' (set ZIPLINE_BENCH_INSTALL=0 to keep bench from installing); those peers are skipped',
  );
  return missing;
}
