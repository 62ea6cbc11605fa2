/**
 * The access log's batching: lines collected over an event-loop turn reach the destination
 * complete and in order, as whole lines, on close and at a sudden process.exit.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { createAccessLog } from '../../src/log/logger.js';
import { tempDir } from '../helpers/temp.js';
import { ROOT } from '../helpers/zipline.js';

const dir = tempDir('zl-access-log-');
after(() => rmSync(dir, { recursive: true, force: true }));

test('lines written in one turn and over several arrive whole and in order (a worker prefix on each), flushed by close', async () => {
  const file = join(dir, 'a.log');
  const log = createAccessLog(file, pino({ level: 'silent' }), { worker: 3 });
  const pad = 'x'.repeat(300);
  for (let i = 0; i < 2000; i++) {
    if (i % 2 === 0) log.writeLine(`{"i":${i},"pad":"${pad}","path":"/caf\u00e9"}\n`);
    else log.write({ i, pad, path: '/caf\u00e9' });
    if (i % 500 === 499) await new Promise((resolve) => setImmediate(resolve));
  }
  await log.close();
  const lines = readFileSync(file, 'utf8').split('\n');
  assert.equal(lines.pop(), '');
  assert.equal(lines.length, 2000);
  lines.forEach((l, i) => {
    assert.deepEqual(JSON.parse(l), { worker: 3, i, pad, path: '/caf\u00e9' });
  });
});

test('process.exit in the turn the lines were written still writes them', () => {
  const file = join(dir, 'exit.log');
  const logger = pathToFileURL(join(ROOT, 'dist/src/log/logger.js')).href;
  const pinoUrl = pathToFileURL(join(ROOT, 'node_modules/pino/pino.js')).href;
  execFileSync(process.execPath, [
    '--input-type=module',
    '-e',
    `const { createAccessLog } = await import(${JSON.stringify(logger)});
     const { default: pino } = await import(${JSON.stringify(pinoUrl)});
     const log = createAccessLog(${JSON.stringify(file)}, pino({ level: 'silent' }));
     const { existsSync, readFileSync } = await import('node:fs');
     // once the first line is in the file, the file is open
     log.writeLine('{"i":0}\\n');
     while (!existsSync(${JSON.stringify(file)}) || readFileSync(${JSON.stringify(file)}, 'utf8') === '') {
       await new Promise((r) => setImmediate(r));
     }
     for (let i = 1; i < 500; i++) log.writeLine('{"i":' + i + '}\\n');
     process.exit(0);`,
  ]);
  const lines = readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '');
  assert.deepEqual(
    lines.map((l) => (JSON.parse(l) as { i: number }).i),
    Array.from({ length: 500 }, (_, i) => i),
  );
});
