/** Binding a TCP-based listener, and wrapping natively accepted fds, shared by tcp and http listeners. */
import { closeSync } from 'node:fs';
import { type Server, Socket } from 'node:net';
import { parseHostPort } from '../config/units.js';
import { ZiplineError } from '../errors.js';

/** Backlog of every TCP listening socket (capped by net.core.somaxconn). */
const LISTEN_BACKLOG = 4096;

/** Listens on `listen` (`host:port`); rejects with `ZL_LISTEN_FAILED` naming the listener. */
export function listenOn(server: Server, listen: string, name: string): Promise<void> {
  const hp = parseHostPort(listen);
  if (hp === undefined) return Promise.reject(new Error(`bad listen address ${listen}`));
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(
        new ZiplineError(
          'ZL_LISTEN_FAILED',
          `listener ${name}: cannot listen on ${listen}: ${err.code ?? err.message}`,
          { cause: err },
        ),
      );
    };
    server.once('error', onError);
    server.listen({ host: hp.host, port: hp.port, backlog: LISTEN_BACKLOG }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * A socket for an fd the native thread accepted (null, fd closed, if Node refuses it). `paused`
 * gives what `pauseOnConnect` gives: nothing is read until the owner resumes it.
 */
export function socketFromFd(fd: number, paused: boolean): Socket | null {
  try {
    const opts = { fd, allowHalfOpen: true, readable: true, writable: true, pauseOnCreate: paused };
    return new Socket(opts as ConstructorParameters<typeof Socket>[0]);
  } catch {
    closeSync(fd);
    return null;
  }
}
