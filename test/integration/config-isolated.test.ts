/**
 * `zipline run` loads its config in a child process (src/config/load-isolated.ts): the answer is
 * the in-process loader's, frozen; problems and read errors come back as they are; a validator
 * that does not answer in time is killed and reported.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfigFile } from '../../src/config/load.js';
import { loadConfigIsolated } from '../../src/config/load-isolated.js';
import { isZiplineError } from '../../src/errors.js';
import { writeConfig } from '../helpers/zipline.js';

const GOOD = `
upstreams:
  app: { servers: ["127.0.0.1:9", "localhost:10"], balance: least_conn }
listeners:
  - { name: web, protocol: http, listen: "127.0.0.1:0", upstream: app }
`;

test('a valid file: the same config as the in-process loader, deep-frozen', async () => {
  const file = writeConfig(GOOD);
  const isolated = await loadConfigIsolated(file);
  const local = loadConfigFile(file);
  assert.ok(isolated.ok && local.ok);
  assert.deepEqual(isolated.config, local.config);
  assert.ok(Object.isFrozen(isolated.config.upstreams.app?.servers));
});

test('an invalid file: the issues, with their lines; an unreadable one: ZL_CONFIG_READ', async () => {
  const bad = await loadConfigIsolated(
    writeConfig(`${GOOD}  - { protocol: tcp, listen: "127.0.0.1:0", upstream: nope }\n`),
  );
  assert.equal(bad.ok, false);
  assert.ok(
    !bad.ok && bad.issues.some((i) => /upstream "nope" is not defined/.test(i.message) && i.line === 6),
  );
  await assert.rejects(
    loadConfigIsolated('/nonexistent/zipline.yaml'),
    (err: unknown) => isZiplineError(err) && err.code === 'ZL_CONFIG_READ',
  );
});

test('a validator that does not answer in time is killed: ZL_INTERNAL', async () => {
  // 1 ms is less than any Node start
  await assert.rejects(
    loadConfigIsolated(writeConfig(GOOD), 1),
    (err: unknown) =>
      isZiplineError(err) && err.code === 'ZL_INTERNAL' && /no answer within 1 ms/.test(err.message),
  );
});
