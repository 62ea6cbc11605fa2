/**
 * The agent's half of a new session's handshake (src/tunnel/SPEC.md): HELLO with the token's
 * proof, then the relay's HELLO_ACK, or the GOAWAY or close that refuses it, within the attempt's
 * deadline. On success the session is set to what both ends accept (sizes, zstd).
 */
import type { TunnelAgentConfig } from '../config/schema.js';
import { ZiplineError } from '../errors.js';
import { ERROR, ERROR_NAMES, FRAME } from './constants.js';
import { CODEC, decodeHelloAck, encodeHello, type HelloAck } from './handshake.js';
import type { SessionApi } from './session-api.js';

export interface HelloOutcome {
  readonly ack: HelloAck;
  /** zstd was asked for and the relay did not offer it. */
  readonly zstdRefused: boolean;
}

export async function helloExchange(
  session: SessionApi,
  agentId: string,
  cfg: TunnelAgentConfig,
  timeoutMs: number,
  /** A GOAWAY's retry-after (ms), when the relay refused with one. */
  onRetryAfter: (ms: number) => void,
): Promise<HelloOutcome> {
  const want = cfg.compression === 'zstd' && session.codecAvailable ? CODEC.ZSTD : 0;
  session.sendControl(
    FRAME.HELLO,
    0,
    0,
    encodeHello(
      {
        agentId,
        codecs: session.codecAvailable ? CODEC.ZSTD : 0,
        want,
        maxPayload: cfg.limits.max_payload,
        initialWindow: cfg.limits.stream_window,
        connectionWindow: cfg.limits.session_window,
      },
      cfg.token,
      session.binding(),
    ),
  );
  const ack = await new Promise<HelloAck | null>((resolve, reject) => {
    const t = setTimeout(
      () => reject(new ZiplineError('ZL_TUNNEL_HANDSHAKE', `no HELLO_ACK within ${cfg.connect_timeout} ms`)),
      timeoutMs,
    );
    session.on('frame', (type: number, _f: number, id: number, payload: Buffer) => {
      if (type === FRAME.HELLO_ACK && id === 0) {
        clearTimeout(t);
        resolve(decodeHelloAck(payload));
      }
    });
    session.once('goaway', (code: number, retryAfter: number) => {
      clearTimeout(t);
      onRetryAfter(retryAfter);
      reject(
        code === ERROR.AUTH_FAILED
          ? new ZiplineError('ZL_TUNNEL_AUTH_FAILED', 'the relay refused our token (GOAWAY AUTH_FAILED)')
          : new ZiplineError('ZL_TUNNEL_CLOSED', `GOAWAY ${ERROR_NAMES[code] ?? code} during the handshake`),
      );
    });
    session.once('close', () => {
      clearTimeout(t);
      reject(new ZiplineError('ZL_TUNNEL_HANDSHAKE', 'the relay closed the connection during the handshake'));
    });
  });
  if (ack === null) throw new ZiplineError('ZL_TUNNEL_HANDSHAKE', 'malformed HELLO_ACK');
  // the HELLO_ACK and what ended the session (a bad frame, a GOAWAY, the close) can come in one
  // read: they were handled before this line runs, so whoever listens for them from here on would
  // listen too late and keep a closed session as 'up' for ever
  if (session.closed || session.goneAway) {
    throw new ZiplineError('ZL_TUNNEL_CLOSED', 'the relay ended the session together with its HELLO_ACK');
  }
  session.removeAllListeners('goaway');
  session.removeAllListeners('close');
  session.compression = (ack.codecs & CODEC.ZSTD) !== 0;
  session.setPeer(ack);
  return { ack, zstdRefused: want !== 0 && !session.compression };
}
