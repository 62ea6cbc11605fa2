/**
 * Resetting an HTTP/2 stream that may still be sending: RST_STREAM, never an END_STREAM first.
 *
 * Node's `stream.close(code)` ends the stream's writable side before it submits the RST_STREAM,
 * and when nothing of it is still queued that end goes out at once, as a DATA frame with
 * END_STREAM: the peer takes what it got as complete (a client, a truncated response; a server,
 * a truncated chunked upload) and ignores the RST_STREAM that follows for a stream it saw end.
 * `destroy(err)` resets without ending the writable side: INTERNAL_ERROR, or CANCEL for Node's
 * own AbortError (as for requests made with a `signal`); `destroy()` with no error, NO_ERROR.
 */
import { EventEmitter, on } from 'node:events';
import type { Http2Stream } from 'node:http2';

/** Node's AbortError class (not exported): from the error `events.on` throws for an aborted signal. */
const AbortErrorClass: new () => Error = (() => {
  try {
    on(new EventEmitter(), 'never', { signal: AbortSignal.abort() });
  } catch (err) {
    if (err instanceof Error && err.name === 'AbortError') return err.constructor as new () => Error;
  }
  return Error; // a Node that no longer throws here: INTERNAL_ERROR instead of CANCEL
})();

/** RST_STREAM INTERNAL_ERROR: the response (or request) failed part way. */
export function resetStream(stream: Http2Stream): void {
  if (!stream.destroyed) stream.destroy(new Error('stream reset by zipline'));
}

/** RST_STREAM NO_ERROR: the answer is complete, the rest of the peer's body is not wanted. */
export function refuseStream(stream: Http2Stream): void {
  if (!stream.destroyed) stream.destroy();
}

/** RST_STREAM CANCEL: zipline no longer wants the stream (its client left, a retry elsewhere). */
export function cancelStream(stream: Http2Stream): void {
  if (!stream.destroyed) stream.destroy(new AbortErrorClass());
}
