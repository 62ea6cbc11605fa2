/**
 * How a stream of either session (session.ts, native/native-session.ts) learns its OPEN's fate
 * and ends abortively: the same errors, codes and timings whichever engine runs it.
 */
import type { Duplex } from 'node:stream';
import { ZiplineError } from '../errors.js';
import { ERROR, OPEN_STATUS } from './constants.js';

/**
 * Resolves with `stream` on OPEN_ACK 0 (its 'open-ack' event); rejects with the status
 * (`ZL_TUNNEL_OPEN_REFUSED`, `openStatus`), after `refused` ended the stream, on any other status
 * or when no answer came within `timeoutMs` (status 6); rejects `ZL_TUNNEL_LIMIT` (status 1) when
 * the peer reset it with REFUSED_STREAM (its `max_streams`: nothing was opened, another relay may
 * take it), and `ZL_TUNNEL_CLOSED` when the stream closes first otherwise.
 */
export function awaitOpenAck<S extends Duplex & { readonly peerResetCode: number | null }>(
  stream: S,
  timeoutMs: number,
  refused: (status: number) => void,
): Promise<S> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => stream.emit('open-ack', OPEN_STATUS.TIMEOUT), timeoutMs);
    stream.once('open-ack', (status: number) => {
      clearTimeout(timer);
      if (status === OPEN_STATUS.OK) {
        resolve(stream);
        return;
      }
      const err = Object.assign(
        new ZiplineError('ZL_TUNNEL_OPEN_REFUSED', `OPEN refused with status ${status}`),
        { openStatus: status },
      );
      refused(status);
      reject(err);
    });
    stream.once('close', () => {
      clearTimeout(timer);
      if (stream.peerResetCode === ERROR.REFUSED_STREAM) {
        reject(
          Object.assign(
            new ZiplineError(
              'ZL_TUNNEL_LIMIT',
              "the relay refused the stream (RST REFUSED_STREAM): the session is at the relay's max_streams",
            ),
            { openStatus: OPEN_STATUS.FAILURE },
          ),
        );
        return;
      }
      reject(new ZiplineError('ZL_TUNNEL_CLOSED', 'stream closed before OPEN_ACK'));
    });
  });
}

/** The error a stream ends with when the peer reset it (`tunnelCode`: the RST's code). */
export function peerResetError(code: number): ZiplineError & { tunnelCode: number } {
  return Object.assign(new ZiplineError('ZL_TUNNEL_RESET', `stream reset by peer (code ${code})`), {
    tunnelCode: code,
  });
}

/** Destroys with `err` when someone listens for errors, else quietly (no crash). */
export function abortStream(stream: Duplex, err: Error): void {
  if (stream.listenerCount('error') > 0) stream.destroy(err);
  else stream.destroy();
}
