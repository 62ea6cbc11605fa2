/** Tunnel test helpers: an in-process relay's config, and frames for a relay of a test's own. */
import { FRAME } from '../../src/tunnel/constants.js';
import { encodeFrame } from '../../src/tunnel/frame.js';
import { encodeHelloAck } from '../../src/tunnel/handshake.js';
import { tempDir } from './temp.js';

/** The token the in-process relays of `relayYaml` accept. */
export const TUNNEL_TOKEN = 'test-token-0123456789abcdef';

/** A relay on a loopback port 0 for `startRuntime`: `tls` off or `auto`, `extra` lines under `relay:`. */
export function relayYaml(extra = '', tls = 'off'): string {
  return `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 1s
tunnel:
  relay:
    listen: 127.0.0.1:0
    tls: ${tls}
    state_dir: ${tempDir('zl-relay-')}
    tokens: ["${TUNNEL_TOKEN}"]
    allow: ["127.0.0.1:*"]
    heartbeat: { interval: 500ms, misses: 3 }
${extra}`;
}

/** A relay's HELLO_ACK frame: no codec, the default limits, an idle relay. */
export function helloAckFrame(): Buffer {
  return encodeFrame(
    FRAME.HELLO_ACK,
    0,
    0,
    encodeHelloAck({
      sessionId: Buffer.alloc(16, 1),
      codecs: 0,
      maxPayload: 16384,
      initialWindow: 262144,
      connectionWindow: 32 << 20,
      sessions: 1,
      streams: 0,
      loadPermille: 0,
    }),
  );
}
