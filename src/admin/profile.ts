/** CPU profile on demand (`GET /debug/profile?seconds=N`), as Go's pprof endpoint. */
import { Session } from 'node:inspector';
import { ZiplineError } from '../errors.js';

let busy = false;
/** Ends the wait of the profile being taken (null when none is). */
let endWait: (() => void) | null = null;

/**
 * The profile being taken ends now: its client went away (as Go's pprof handler stops when the
 * request's context ends), so that the next request need not wait for the seconds asked before.
 */
export function stopCpuProfile(): void {
  endWait?.();
}

/** A profile of the next `seconds`, or less if `signal` aborts (or `stopCpuProfile()` is called). */
export async function captureCpuProfile(seconds: number, signal?: AbortSignal): Promise<string> {
  if (busy)
    throw new ZiplineError('ZL_ADMIN_BUSY', 'a CPU profile is already being taken; try again when it ends');
  busy = true;
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object): Promise<unknown> =>
    new Promise((resolve, reject) => {
      session.post(method, params ?? {}, (err, result) => (err ? reject(err) : resolve(result)));
    });
  try {
    await post('Profiler.enable');
    await post('Profiler.setSamplingInterval', { interval: 100 });
    await post('Profiler.start');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => endWait?.(), seconds * 1000);
      endWait = () => {
        endWait = null;
        clearTimeout(timer);
        signal?.removeEventListener('abort', stopCpuProfile);
        resolve();
      };
      if (signal?.aborted === true) endWait();
      else signal?.addEventListener('abort', stopCpuProfile);
    });
    const result = (await post('Profiler.stop')) as { profile: unknown };
    return JSON.stringify(result.profile);
  } finally {
    session.disconnect();
    busy = false;
  }
}
