/**
 * `node:http2`, loaded on first use rather than with the modules that need it: it is the heaviest
 * of Node's built-ins (~3 MiB of RSS per process), and plain HTTP/1.1 listeners and upstreams,
 * workers without TLS and the tunnel never need it.
 */
import { createRequire } from 'node:module';

let http2: typeof import('node:http2') | undefined;

export function loadHttp2(): typeof import('node:http2') {
  http2 ??= createRequire(import.meta.url)('node:http2') as typeof import('node:http2');
  return http2;
}
