/**
 * `npm start`: two demo HTTP origins, two TCP echo origins and a UDP echo origin, zipline in front of them
 * (examples/quickstart.yaml) with a tunnel relay and agent on loopback, and the URLs printed.
 * Ctrl-C drains zipline and exits.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTcpEcho, startUdpEcho } from '../src/demo/echo.js';
import { startHttpOrigin } from '../src/demo/http-origin.js';
import { relayTls } from '../src/tunnel/tls.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

function portFree(hostPort: string): Promise<boolean> {
  const [host, port] = hostPort.split(':');
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(Number(port), host, () => s.close(() => resolve(true)));
  });
}

function freePort(): Promise<string> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address() as AddressInfo;
      s.close(() => resolve(`127.0.0.1:${a.port}`));
    });
  });
}

function udpPortFree(hostPort: string): Promise<boolean> {
  const [host, port] = hostPort.split(':');
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    s.once('error', () => resolve(false));
    s.bind(Number(port), host, () => s.close(() => resolve(true)));
  });
}

/** The address asked for (env) or the usual one, or port 0 (any free one) when it is taken. */
async function pick(envName: string, preferred: string, udp = false): Promise<string> {
  const v = process.env[envName] ?? preferred;
  return (await (udp ? udpPortFree(v) : portFree(v))) ? v : v.replace(/:\d+$/, ':0');
}

const a = await startTcpEcho();
const b = await startTcpEcho();
const u = await startUdpEcho();
const ha = await startHttpOrigin('demo-a');
const hb = await startHttpOrigin('demo-b');
// the relay's certificate is made (or found) now, so the agent can pin its fingerprint
const stateDir = join(root, '.zipline');
const relayCert = await relayTls('auto', stateDir, 'TLS_CHACHA20_POLY1305_SHA256');
// a free port for the relay, known before start: the agent's config names it
const relayListen = await pick('QUICKSTART_RELAY_LISTEN', '127.0.0.1:7000');
const relayAddress = relayListen.endsWith(':0') ? await freePort() : relayListen;
const env = {
  ...process.env,
  QUICKSTART_STATE_DIR: stateDir,
  QUICKSTART_RELAY_LISTEN: relayAddress,
  QUICKSTART_RELAY_ADDRESS: relayAddress,
  QUICKSTART_RELAY_FINGERPRINT: relayCert.fingerprint,
  ZIPLINE_TUNNEL_TOKEN: process.env.ZIPLINE_TUNNEL_TOKEN ?? randomBytes(24).toString('hex'),
  QUICKSTART_SOCKS5_LISTEN: await pick('QUICKSTART_SOCKS5_LISTEN', '127.0.0.1:1080'),
  QUICKSTART_HTTP_PROXY_LISTEN: await pick('QUICKSTART_HTTP_PROXY_LISTEN', '127.0.0.1:8118'),
  DEMO_ECHO_PORT_A: String((a.address() as AddressInfo).port),
  DEMO_ECHO_PORT_B: String((b.address() as AddressInfo).port),
  DEMO_UDP_ECHO_PORT: String(u.address().port),
  DEMO_HTTP_PORT_A: String((ha.address() as AddressInfo).port),
  DEMO_HTTP_PORT_B: String((hb.address() as AddressInfo).port),
  QUICKSTART_HTTP_LISTEN: await pick('QUICKSTART_HTTP_LISTEN', '127.0.0.1:8080'),
  ZIPLINE_ADMIN_LISTEN: await pick('ZIPLINE_ADMIN_LISTEN', '127.0.0.1:9901'),
  QUICKSTART_TCP_LISTEN: await pick('QUICKSTART_TCP_LISTEN', '127.0.0.1:7001'),
  QUICKSTART_UDP_LISTEN: await pick('QUICKSTART_UDP_LISTEN', '127.0.0.1:7002', true),
};
const child = spawn(
  process.execPath,
  [`${root}bin/zipline.js`, 'run', '-c', `${root}examples/quickstart.yaml`],
  {
    env,
    stdio: ['ignore', 'inherit', 'pipe'],
  },
);
let printed = false;
let buffered = '';
/** zipline's admin URL, once it said it (its log). */
let adminUrl: string | null = null;
/** The zipline that serves: the child, or after an upgrade (SIGUSR2, POST /upgrade) the one it started. */
let serving = child.pid;
child.stderr.setEncoding('utf8');
child.stderr.on('data', async (chunk: string) => {
  process.stderr.write(chunk);
  if (printed) return;
  buffered += chunk;
  const m = /"admin":"(http:\/\/[^"]+)"/.exec(buffered);
  if (m === null) return;
  printed = true;
  const admin = m[1] as string;
  adminUrl = admin;
  const stats = (await fetch(`${admin}stats`)
    .then((r) => r.json())
    .catch((err: unknown) => {
      // the banner is a convenience: zipline keeps running and its own log has the addresses
      process.stderr.write(`quickstart: could not read ${admin}stats: ${String(err)}\n`);
      return { listeners: {} };
    })) as {
    listeners: Record<string, { address: string }>;
    tunnel?: {
      agent?: { entries: Record<string, { address: string }> } | null;
      relay?: { tls: { fingerprint: string } } | null;
    } | null;
  };
  const http = stats.listeners.web?.address ?? '?';
  const tcp = stats.listeners.echo?.address ?? '?';
  const udp = stats.listeners.echo_udp?.address ?? '?';
  const socks = stats.tunnel?.agent?.entries.socks5?.address ?? '?';
  const httpProxy = stats.tunnel?.agent?.entries.http_proxy?.address ?? '?';
  process.stdout.write(
    [
      '',
      'zipline quickstart is running',
      `  admin / dashboard:  ${admin}`,
      `  metrics:            ${admin}metrics`,
      `  HTTP (2 origins, round robin):      curl http://${http}/hello`,
      `  TCP echo (2 origins, round robin):  socat - TCP:${tcp}`,
      `  UDP echo:                           socat - UDP:${udp}`,
      `  tunnel SOCKS5 (agent→relay, TLS):   curl --socks5-hostname ${socks} http://${http}/hello`,
      `  tunnel HTTP proxy:                  curl --proxy http://${httpProxy} http://${http}/hello`,
      `  relay fingerprint:                  ${relayCert.fingerprint}`,
      '  Ctrl-C drains and exits.',
      '',
    ].join('\n'),
  );
});
// Passed on as the other signal. When the whole process group is signalled (a terminal's Ctrl-C,
// `timeout`, systemd's control-group kill), zipline gets the original as well, and zipline takes a
// different signal within 0.5 s of the first for a supervisor's copy of it (src/cli/run.ts); the
// same signal twice would force an exit without draining.
process.on('SIGINT', () => signal('SIGTERM'));
process.on('SIGTERM', () => signal('SIGINT'));
child.on('exit', (code) => {
  void successor().then((pid) => {
    if (pid === null) return finish(code ?? 0);
    // upgraded in place: the demo origins stay for the new process, whose output is the same
    // pipe, which ends when it exits
    serving = pid;
    process.stderr.write(`quickstart: zipline was upgraded in place; process ${pid} serves now\n`);
    child.stderr.once('end', () => finish(0));
  });
});

function signal(sig: NodeJS.Signals): void {
  try {
    if (serving !== undefined) process.kill(serving, sig);
  } catch {
    // gone already
  }
}

/** After the child exited: the process an upgrade left serving at the admin address, if any. */
async function successor(): Promise<number | null> {
  if (adminUrl === null) return null;
  try {
    const r = await fetch(`${adminUrl}stats`, { signal: AbortSignal.timeout(2000) });
    const pid = ((await r.json()) as { pid?: unknown }).pid;
    return typeof pid === 'number' && pid !== child.pid ? pid : null;
  } catch {
    return null;
  }
}

function finish(code: number): void {
  a.close();
  b.close();
  u.close();
  ha.close();
  hb.close();
  process.exit(code);
}
