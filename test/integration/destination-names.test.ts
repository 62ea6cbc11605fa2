/**
 * Names clients ask a socks5 listener (and the relay) to reach, in a real zipline whose system
 * resolver talks to a DNS server that never answers: the process runs in its own mount namespace
 * with /etc/resolv.conf and /etc/hosts bound over (Linux, root, `unshare`). One client asking for
 * dead names holds only its own share of lookups; another client's name (from the hosts file) is
 * served at once. Before the gate, the dead names held every thread of libuv's pool and the other
 * client's lookup waited behind them until its connect timeout.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { have, run } from '../helpers/daemons.js';
import { testPeers } from '../helpers/http.js';
import { until } from '../helpers/net.js';
import { tempDir } from '../helpers/temp.js';
import { spawnZipline } from '../helpers/zipline.js';

const peers = testPeers();
after(() => peers.cleanup());

/** Where the dead DNS server listens: a loopback address nothing else uses. */
const DNS = '127.0.0.153';

/** Runs the rest of a command line in a mount namespace with these resolv.conf and hosts files. */
function namespace(resolvConf: string, hosts: string): string[] {
  return [
    'unshare',
    '-m',
    'sh',
    '-c',
    `mount --bind ${resolvConf} /etc/resolv.conf && mount --bind ${hosts} /etc/hosts && exec "$@"`,
    'sh',
  ];
}

function skipReason(): string | false {
  if (process.platform !== 'linux' || process.getuid?.() !== 0)
    return 'needs Linux and root (a mount namespace)';
  if (!have('unshare') || !have('curl')) return 'needs unshare (util-linux) and curl';
  // the same binds the test makes (a container may refuse them, or /etc/resolv.conf may dangle)
  const dir = tempDir('zipline-dns-probe-');
  writeFileSync(join(dir, 'f'), '');
  const [cmd, ...args] = namespace(join(dir, 'f'), join(dir, 'f'));
  if (spawnSync(cmd as string, [...args, 'true']).status !== 0)
    return 'mount namespaces are not permitted here';
  return false;
}

describe('destination names with a DNS server that never answers', { skip: skipReason() }, () => {
  test("a client's dead names hold its own share of lookups; another client's name is served at once", async (t) => {
    const dns = createSocket('udp4');
    let queries = 0;
    dns.on('message', () => {
      queries++; // and never a reply
    });
    const bound = await new Promise<boolean>((resolve) => {
      dns.once('error', () => resolve(false));
      dns.bind(53, DNS, () => resolve(true));
    });
    if (!bound) {
      t.skip(`cannot bind ${DNS}:53 for the silent DNS server`);
      return;
    }
    const dir = tempDir('zipline-dns-');
    writeFileSync(join(dir, 'resolv.conf'), `nameserver ${DNS}\noptions timeout:4 attempts:1\n`);
    writeFileSync(join(dir, 'hosts'), '127.0.0.1 localhost\n127.0.0.1 fast.test\n');
    const o = await peers.origin();
    const originPort = o.address.split(':')[1];
    const z = await spawnZipline(
      `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 1s
listeners:
  - name: socks
    protocol: socks5
    listen: 127.0.0.1:0
    allow: ["*.test:*"]
    timeouts: { connect: 1500ms }
`,
      {},
      namespace(join(dir, 'resolv.conf'), join(dir, 'hosts')),
    );
    try {
      const socks = await z.listener('socks');
      // client 127.0.0.1 asks for eight names nobody will answer
      const dead = Array.from({ length: 8 }, (_, i) =>
        run('curl', ['-sS', '-m', '10', '--socks5-hostname', socks, `http://dead${i}.test/`]),
      );
      await until(() => queries >= 2, 'the dead names reach the DNS server');
      // client 127.0.0.2 asks for a name the hosts file knows
      const fast = await run('curl', [
        '-sS',
        '-m',
        '10',
        '--interface',
        '127.0.0.2',
        '--socks5-hostname',
        socks,
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        `http://fast.test:${originPort}/x`,
      ]);
      assert.equal(fast.stdout, '200', fast.stderr);
      for (const r of await Promise.all(dead)) assert.notEqual(r.code, 0, 'a dead name is not reached');
      const text = await (await fetch(`${z.admin}metrics`)).text();
      // two of client 127.0.0.1's lookups ran; the six that waited were dropped when it gave up
      assert.match(text, /zipline_destination_lookups_total\{result="expired"\} 6\b/);
      assert.match(text, /zipline_destination_lookups_total\{result="ok"\} 1\b/);
    } finally {
      await z.stop();
      dns.close();
    }
  });
});
