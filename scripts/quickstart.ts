/**
 * `npm start`: two demo HTTP origins, two TCP echo origins and a UDP echo origin, zipline in front of them
 * (examples/quickstart.yaml), and the URLs printed. Ctrl-C drains zipline and exits.
 */
import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { startTcpEcho, startUdpEcho } from '../src/demo/echo.js';
import { startHttpOrigin } from '../src/demo/http-origin.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

function portFree(hostPort: string): Promise<boolean> {
  const [host, port] = hostPort.split(':');
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(Number(port), host, () => s.close(() => resolve(true)));
  });
}

async function pick(envName: string, preferred: string): Promise<string> {
  const v = process.env[envName] ?? preferred;
  return (await portFree(v)) ? v : v.replace(/:\d+$/, ':0');
}

const a = await startTcpEcho();
const b = await startTcpEcho();
const u = await startUdpEcho();
const ha = await startHttpOrigin('demo-a');
const hb = await startHttpOrigin('demo-b');
const env = {
  ...process.env,
  DEMO_ECHO_PORT_A: String((a.address() as AddressInfo).port),
  DEMO_ECHO_PORT_B: String((b.address() as AddressInfo).port),
  DEMO_UDP_ECHO_PORT: String(u.address().port),
  DEMO_HTTP_PORT_A: String((ha.address() as AddressInfo).port),
  DEMO_HTTP_PORT_B: String((hb.address() as AddressInfo).port),
  QUICKSTART_HTTP_LISTEN: await pick('QUICKSTART_HTTP_LISTEN', '127.0.0.1:8080'),
  ZIPLINE_ADMIN_LISTEN: await pick('ZIPLINE_ADMIN_LISTEN', '127.0.0.1:9901'),
  QUICKSTART_TCP_LISTEN: await pick('QUICKSTART_TCP_LISTEN', '127.0.0.1:7001'),
  QUICKSTART_UDP_LISTEN: process.env.QUICKSTART_UDP_LISTEN ?? '127.0.0.1:7002',
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
child.stderr.setEncoding('utf8');
child.stderr.on('data', async (chunk: string) => {
  process.stderr.write(chunk);
  if (printed) return;
  buffered += chunk;
  const m = /"admin":"(http:\/\/[^"]+)"/.exec(buffered);
  if (m === null) return;
  printed = true;
  const admin = m[1] as string;
  const stats = (await fetch(`${admin}stats`)
    .then((r) => r.json())
    .catch((err: unknown) => {
      // the banner is a convenience: zipline keeps running and its own log has the addresses
      process.stderr.write(`quickstart: could not read ${admin}stats: ${String(err)}\n`);
      return { listeners: {} };
    })) as { listeners: Record<string, { address: string }> };
  const http = stats.listeners.web?.address ?? '?';
  const tcp = stats.listeners.echo?.address ?? '?';
  const udp = stats.listeners.echo_udp?.address ?? '?';
  process.stdout.write(
    [
      '',
      'zipline quickstart is running',
      `  admin / dashboard:  ${admin}`,
      `  metrics:            ${admin}metrics`,
      `  HTTP (2 origins, round robin):      curl http://${http}/hello`,
      `  TCP echo (2 origins, round robin):  socat - TCP:${tcp}`,
      `  UDP echo:                           socat - UDP:${udp}`,
      '  Ctrl-C drains and exits.',
      '',
    ].join('\n'),
  );
});
const stop = (): void => {
  child.kill('SIGTERM');
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
child.on('exit', (code) => {
  a.close();
  b.close();
  u.close();
  ha.close();
  hb.close();
  process.exit(code ?? 0);
});
