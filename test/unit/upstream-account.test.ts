/**
 * What an exchange holds on its upstream is taken and given back once (src/http/upstream-account.ts),
 * and the keep-alive race's replay is neither an attempt nor a retry (docs/HTTP.md "Keep-alive").
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { HttpPool } from '../../src/http/pool.js';
import { UpstreamAccount } from '../../src/http/upstream-account.js';
import { metrics } from '../../src/metrics/catalog.js';
import type { Admission } from '../../src/upstream/circuit-breaker.js';
import type { Endpoint } from '../../src/upstream/endpoint.js';
import type { Upstream } from '../../src/upstream/upstream.js';

function fakes(name: string, admission: Admission = 'normal') {
  const log: string[] = [];
  const up = {
    name,
    activeRequests: 0,
    activeRetries: 0,
    breaker: {
      admit: () => admission,
      record: (a: Admission, ok: boolean) => log.push(`record ${a} ${ok}`),
      abandon: (a: Admission) => log.push(`abandon ${a}`),
    },
    acquire: (e: Endpoint) => log.push(`acquire ${e.address}`),
    release: (e: Endpoint) => log.push(`release ${e.address}`),
  };
  const pool = { wakeOne: () => log.push('wake') };
  const endpoint = (address: string): Endpoint =>
    ({
      address,
      recordSuccess: () => log.push(`success ${address}`),
      recordFailure: () => log.push(`failure ${address}`),
    }) as unknown as Endpoint;
  const account = new UpstreamAccount(up as unknown as Upstream, pool as unknown as HttpPool, 0);
  return { up, log, endpoint, account };
}

async function retries(upstream: string): Promise<number> {
  const v = (await metrics.retries.get()).values.find((x) => x.labels.upstream === upstream);
  return v?.value ?? 0;
}

test('attempts, retries and the replay: only a second attempt is a retry; the replay is neither', async () => {
  const { log, endpoint, account } = fakes('acct-retries');
  const a = endpoint('a:1');
  const b = endpoint('b:1');
  account.acquire(a);
  assert.equal(account.attempts, 1);
  assert.equal(await retries('acct-retries'), 0);
  account.release();
  account.acquire(b); // a retry on another server
  assert.equal(account.attempts, 2);
  assert.equal(await retries('acct-retries'), 1);
  account.release();
  account.acquire(b, true); // the keep-alive race's replay of that attempt
  assert.equal(account.attempts, 2, 'not an attempt');
  assert.equal(await retries('acct-retries'), 1, 'not a retry');
  account.release();
  account.release(); // a second release gives back nothing
  assert.deepEqual(log, [
    'acquire a:1',
    'release a:1',
    'wake',
    'acquire b:1',
    'release b:1',
    'wake',
    'acquire b:1',
    'release b:1',
    'wake',
  ]);
});

test('counters are taken and given back once; the breaker hears a verdict or one abandon, never neither', () => {
  const { up, log, endpoint, account } = fakes('acct-counters');
  assert.equal(account.admit(0), true);
  assert.equal(up.activeRequests, 1);
  account.enterRetry();
  account.enterRetry();
  assert.equal(up.activeRetries, 1, 'in the retry budget once');
  account.acquire(endpoint('a:1'));
  account.judge(false, 1);
  account.abandon();
  account.close();
  account.close();
  assert.equal(up.activeRequests, 0);
  assert.equal(up.activeRetries, 0);
  // a verdict was given: the abandon has nothing left to give back
  assert.deepEqual(log, ['acquire a:1', 'failure a:1', 'record normal false']);
  // a half-open probe that ends with no attempt judged (no server could be picked): the close
  // gives its admission back once, so the breaker lets the next request probe
  const probe = fakes('acct-probe', 'probe');
  assert.equal(probe.account.admit(0), true);
  probe.account.close();
  probe.account.close();
  assert.deepEqual(probe.log, ['abandon probe']);
  // the client left first: one abandon, not another at the close
  const left = fakes('acct-left', 'probe');
  left.account.admit(0);
  left.account.abandon();
  left.account.close();
  assert.deepEqual(left.log, ['abandon probe']);
  // refused by the breaker: counted in until closed, like any other
  const refused = fakes('acct-refused', 'refused');
  assert.equal(refused.account.admit(0), false);
  refused.account.close();
  assert.equal(refused.up.activeRequests, 0);
  // never admitted (a malformed body read with its head): close takes nothing back
  const early = fakes('acct-early');
  early.account.close();
  assert.equal(early.up.activeRequests, 0);
});
