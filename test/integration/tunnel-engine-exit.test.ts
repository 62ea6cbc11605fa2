/**
 * The native tunnel engine and process exit: a process whose engine is busy (20 TLS sessions
 * PINGing every millisecond, then closing, so closes linger) exits cleanly, naturally and by
 * process.exit(). The engine's thread used to run on through Node's teardown (its threadsafe
 * function finalized, OpenSSL's state freed at exit) and the natural exit aborted 40 times in 40;
 * it is now stopped and joined first (native/tunnel/loop.c, stop_thread).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { engine } from '../../src/tunnel/native/binding.js';
import { ROOT } from '../helpers/zipline.js';

const SESSION = pathToFileURL(join(ROOT, 'dist/src/tunnel/native/native-session.js')).href;
const FIXTURES = join(ROOT, 'test/fixtures/tls');

/** A child that runs busy native sessions, then exits `how`. */
const CHILD = (how: 'natural' | 'exit'): string => `
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
const { NativeSession, tlsContext } = await import(${JSON.stringify(SESSION)});
const cert = readFileSync(${JSON.stringify(join(FIXTURES, 'a.crt'))}, 'utf8');
const key = readFileSync(${JSON.stringify(join(FIXTURES, 'a.key'))}, 'utf8');
const ciphers = 'TLS_CHACHA20_POLY1305_SHA256';
const sctx = tlsContext(true, { cert, key, ciphers });
const cctx = tlsContext(false, { ciphers });
const server = createServer();
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const sessions = [];
for (let i = 0; i < 20; i++) {
  const accepted = once(server, 'connection');
  const c = connect(server.address().port, '127.0.0.1');
  await once(c, 'connect');
  const [sock] = await accepted;
  const a = NativeSession.start(c, { role: 'agent', pingIntervalMs: 1, misses: 100000 }, { ctx: cctx });
  const r = NativeSession.start(sock, { role: 'relay', pingIntervalMs: 1, misses: 100000 }, { ctx: sctx });
  await Promise.all([a.handshake(5000), r.handshake(5000)]);
  sessions.push(a, r);
}
server.close();
await new Promise((r) => setTimeout(r, 30));
${how === 'exit' ? 'process.exit(0);' : 'for (const s of sessions) s.close();'}
`;

for (const how of ['natural', 'exit'] as const) {
  test(`a process whose native tunnel engine is busy exits cleanly (${how === 'exit' ? 'process.exit()' : 'naturally, with closes lingering'}), 10 times`, {
    skip: engine.available ? false : 'native engine not built',
  }, async () => {
    for (let i = 0; i < 10; i++) {
      const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD(how)], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr?.on('data', (c: Buffer) => {
        stderr += String(c);
      });
      const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
      assert.deepEqual({ code, signal }, { code: 0, signal: null }, `run ${i}: ${stderr.slice(0, 500)}`);
    }
  });
}
