/** Frames for a relay of a test's own, written by hand. */
import { FRAME } from '../../src/tunnel/constants.js';
import { encodeFrame } from '../../src/tunnel/frame.js';
import { encodeHelloAck } from '../../src/tunnel/handshake.js';

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
