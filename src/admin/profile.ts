/** CPU profile on demand (`GET /debug/profile?seconds=N`), as Go's pprof endpoint. */
import { Session } from 'node:inspector';
import { ZiplineError } from '../errors.js';

let busy = false;

export async function captureCpuProfile(seconds: number): Promise<string> {
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
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const result = (await post('Profiler.stop')) as { profile: unknown };
    return JSON.stringify(result.profile);
  } finally {
    session.disconnect();
    busy = false;
  }
}
