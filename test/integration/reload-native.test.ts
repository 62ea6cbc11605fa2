/**
 * Reloading `native` and `udp.receive_buffer`: TCP listeners switch data path for new
 * connections; UDP ones say they cannot change either.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfigText } from '../../src/config/load.js';
import { nativePump } from '../../src/l4/native-pump.js';
import { closeServer, dial, port, readAll, tcpEcho, udpEcho, until } from '../helpers/net.js';
import { startRuntime } from '../helpers/zipline.js';

test('reload of native: TCP applies to new connections, UDP is reported as needing a restart', async (t) => {
  if (!nativePump.available) {
    t.skip('the native data path is not built on this platform');
    return;
  }
  const echo = await tcpEcho();
  const uecho = await udpEcho();
  const yaml = (native: string): string => `
admin: { listen: 127.0.0.1:0 }
log: { access: off }
drain_timeout: 2s
upstreams:
  t: { servers: [127.0.0.1:${port(echo)}] }
  u: { servers: [127.0.0.1:${port(uecho)}] }
listeners:
  - { name: tcp, protocol: tcp, listen: 127.0.0.1:0, upstream: t, native: ${native} }
  - { name: udp, protocol: udp, listen: 127.0.0.1:0, upstream: u, native: ${native}, udp: { receive_buffer: ${native === 'auto' ? '4MiB' : '1MiB'} } }
`;
  const z = await startRuntime(yaml('auto'));
  try {
    const roundTrip = async (): Promise<unknown> => {
      const before = z.access.length;
      const c = await dial(z.addr('tcp'));
      c.end('x');
      await readAll(c);
      await until(() => z.access.length > before, 'access line');
      return z.access[z.access.length - 1]?.data_path;
    };
    assert.equal(await roundTrip(), 'native');
    const next = loadConfigText(yaml('off'), {});
    assert.ok(next.ok);
    const report = await z.rt.reload(next.config);
    assert.equal(report.result, 'partial');
    assert.deepEqual(report.errors, [
      'listener udp: "native" of a UDP listener takes effect at restart; the rest was applied',
      'listener udp: "udp.receive_buffer" of a UDP listener takes effect at restart; the rest was applied',
    ]);
    assert.deepEqual(report.listeners.changed.sort(), ['tcp', 'udp']);
    assert.equal(await roundTrip(), 'js', 'new TCP connections use the JavaScript data path');
  } finally {
    await z.stop();
    await closeServer(echo);
    uecho.close();
  }
});
