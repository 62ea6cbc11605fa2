#!/usr/bin/env node
// The `zipline` command. The TypeScript sources compile to dist/ (`npm run build`, run by
// `npm start` and `npm test`); this file only loads the compiled entry point.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write('zipline: not built yet; run `npm run build` in the zipline checkout first\n');
  process.exit(2);
}
// libuv's thread pool (file writes, getaddrinfo) before anything uses it: 8 threads, not 4, so the
// names clients ask to reach (at most 4 lookups at once, src/proxy/name-resolver.ts) never take
// them all. Yours wins.
process.env.UV_THREADPOOL_SIZE ??= '8';
// `zipline run` first restarts itself in place with its V8 heap flags (src/cli/heap-flags.ts)
const heap = new URL('../dist/src/cli/heap-flags.js', import.meta.url);
(await import(heap.href)).applyHeapFlags();
await import(entry.href);
