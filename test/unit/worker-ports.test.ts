/**
 * The primary's port-0 reservations for workers (src/workers/ports.ts): the port picked for a
 * UDP listener stays the primary's until the workers have bound theirs, so no other process can
 * take it in between (it once did, in the suite: a worker failed with EADDRINUSE).
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { test } from 'node:test';
import { loadConfigText } from '../../src/config/load.js';
import { parseHostPort } from '../../src/config/units.js';
import { nativePump } from '../../src/l4/native-pump.js';
import { PortReservations } from '../../src/workers/ports.js';

/** Binds a plain UDP socket (no SO_REUSEPORT) on the port: null when it could, else the error code. */
async function plainUdpBind(port: number): Promise<string | null> {
  const s = createSocket('udp4');
  try {
    s.bind(port, '127.0.0.1');
    const [err] = (await Promise.race([once(s, 'listening').then(() => [null]), once(s, 'error')])) as [
      NodeJS.ErrnoException | null,
    ];
    return err?.code ?? null;
  } finally {
    s.close();
  }
}

test('a port-0 UDP listener: the picked port is held until the workers have bound (settle), then let go', {
  skip: nativePump.available ? false : 'workers need the native module (SO_REUSEPORT sockets)',
}, async () => {
  const r = loadConfigText(
    `
upstreams: { u: { servers: [127.0.0.1:1] } }
listeners: [{ name: d, protocol: udp, listen: 127.0.0.1:0, upstream: u }]
`,
    {},
  );
  assert.ok(r.ok);
  const ports = new PortReservations();
  try {
    const resolved = await ports.resolve(r.config);
    const port = parseHostPort(resolved.config.listeners[0]?.listen ?? '')?.port ?? 0;
    assert.ok(port > 0);
    assert.equal(
      await plainUdpBind(port),
      'EADDRINUSE',
      'another process cannot take it before the workers bind',
    );
    ports.settle();
    assert.equal(await plainUdpBind(port), null, 'once settled, the primary no longer holds it');
  } finally {
    ports.releaseAll();
  }
});
