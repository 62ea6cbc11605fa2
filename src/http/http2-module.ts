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

/**
 * HTTP/1.1 fields that are connection-specific (RFC 9113 §8.2.2, and `HTTP2-Settings` of the h2c
 * upgrade): never sent in an HTTP/2 header list (Node refuses them), nor passed on from one (`te`
 * is, as `te: trailers` only, where a request needs it).
 */
export const CONNECTION_SPECIFIC: readonly string[] = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'http2-settings',
];
