/**
 * Fuzzing the config loader: mutated YAML never throws and never yields a config that skipped
 * validation; every refusal carries located issues. Deterministic (seeded), ~20,000 inputs.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfigText } from '../../src/config/load.js';
import { rng } from '../helpers/rng.js';

const SEED_DOC = `admin: { listen: 127.0.0.1:9901, token: "\${T:-}" }
log: { level: info, access: stdout }
drain_timeout: 30s
upstreams:
  api:
    balance: hash
    servers: [127.0.0.1:9001, { address: "[::1]:9002", weight: 3, max_fails: 2, fail_timeout: 10s }]
    health_check: { type: http, path: /healthz, interval: 2s, timeout: 1s, rise: 2, fall: 3 }
    retry: { attempts: 2, backoff: { base: 25ms, max: 250ms }, budget: 20% }
listeners:
  - { name: pg, protocol: tcp, listen: 0.0.0.0:6432, upstream: api, timeouts: { client_idle: 1m } }
  - { name: dns, protocol: udp, listen: ":5353", upstream: api, udp: { responses: 1, idle_timeout: 5s } }
`;

const TOKENS = [
  '',
  ' ',
  ':',
  '-',
  '[',
  ']',
  '{',
  '}',
  ',',
  '"',
  "'",
  '\n',
  '\t',
  '#',
  '&a',
  '*a',
  '!!str',
  '${X}',
  '${',
  '0',
  '-1',
  '1e309',
  'null',
  '~',
  'true',
  '5sec',
  '%',
  '999999',
  'protocol',
  'upstream',
  '\u0000',
  '\uffff',
  '  - ',
  ': :',
];

test('20,000 mutated configs: the loader never throws; refusals are located', () => {
  const r = rng(0x5eed);
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    let doc = SEED_DOC;
    const edits = 1 + Math.floor(r() * 4);
    for (let e = 0; e < edits; e++) {
      const at = Math.floor(r() * doc.length);
      const op = r();
      const tok = TOKENS[Math.floor(r() * TOKENS.length)] as string;
      if (op < 0.4) doc = doc.slice(0, at) + tok + doc.slice(at);
      else if (op < 0.7) doc = doc.slice(0, at) + doc.slice(at + 1 + Math.floor(r() * 8));
      else doc = doc.slice(0, at) + tok + doc.slice(at + tok.length);
    }
    let result: ReturnType<typeof loadConfigText>;
    try {
      result = loadConfigText(doc, {});
    } catch (err) {
      assert.fail(`loader threw on input #${i}: ${(err as Error).stack}\n---\n${doc}`);
    }
    if (result.ok) {
      accepted++;
      assert.ok(Object.isFrozen(result.config));
    } else {
      assert.ok(result.issues.length > 0);
      for (const issue of result.issues) {
        assert.ok(issue.line >= 1 && issue.col >= 1, `unlocated issue ${JSON.stringify(issue)}`);
        assert.ok(issue.message.length > 0);
      }
    }
  }
  assert.ok(accepted > 0, 'some mutations stay valid (the seed document itself is valid)');
});
