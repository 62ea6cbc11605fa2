/**
 * An https listener's TLS policy as a scanner (sslscan, testssl.sh) sees it: TLS 1.2 offers only
 * forward-secret AEAD suites by default, `tls.ciphers` widens or narrows that (and survives a
 * reload), TLS 1.3 is unaffected, a cipher list OpenSSL cannot use is a config error, and a
 * client-initiated renegotiation is refused. A certificate renewed in place is read again at reload.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { loadConfigText } from '../../src/config/load.js';
import { testPeers } from '../helpers/http.js';
import { splitAddress } from '../helpers/net.js';
import { tempDir } from '../helpers/temp.js';
import { ROOT, startRuntime } from '../helpers/zipline.js';

const peers = testPeers();
after(() => peers.cleanup());

const TLS = join(ROOT, 'test/fixtures/tls');

function yaml(origin: string, tlsExtra = ''): string {
  return `
admin: { listen: 127.0.0.1:0 }
drain_timeout: 2s
upstreams:
  app: { servers: [${origin}] }
listeners:
  - name: tls
    protocol: https
    listen: 127.0.0.1:0
    upstream: app
    tls: { cert: ${TLS}/rsa.crt, key: ${TLS}/rsa.key${tlsExtra} }
`;
}

/** The suite a client offering only `ciphers` agrees on, or `refused`. */
function handshake(
  port: number,
  ciphers: string | undefined,
  maxVersion: 'TLSv1.2' | 'TLSv1.3',
): Promise<string> {
  return new Promise((resolve) => {
    const s = tlsConnect({
      host: '127.0.0.1',
      port,
      servername: 'rsa.test',
      rejectUnauthorized: false,
      maxVersion,
      ...(ciphers === undefined ? {} : { ciphers }),
    });
    s.once('secureConnect', () => {
      resolve(`${s.getProtocol()} ${s.getCipher().standardName}`);
      s.destroy();
    });
    s.once('error', () => resolve('refused'));
  });
}

test('TLS 1.2 offers forward-secret AEAD suites only by default; tls.ciphers changes that on reload; TLS 1.3 is unaffected', async () => {
  const o = await peers.origin();
  const z = await startRuntime(yaml(o.address));
  try {
    const [, p] = splitAddress(z.addr('tls'));
    // what Node's own default list (and nginx's `HIGH:!aNULL:!MD5`) would also accept
    for (const legacy of [
      'AES128-SHA',
      'AES256-GCM-SHA384',
      'ECDHE-RSA-AES128-SHA',
      'ECDHE-RSA-AES256-SHA384',
    ])
      assert.equal(await handshake(p, legacy, 'TLSv1.2'), 'refused', legacy);
    assert.equal(
      await handshake(p, 'ECDHE-RSA-AES128-GCM-SHA256', 'TLSv1.2'),
      'TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256',
    );
    assert.equal(
      await handshake(p, 'ECDHE-RSA-CHACHA20-POLY1305', 'TLSv1.2'),
      'TLSv1.2 TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256',
    );
    assert.match(
      await handshake(p, undefined, 'TLSv1.3'),
      /^TLSv1\.3 TLS_(AES_256_GCM|CHACHA20_POLY1305|AES_128_GCM)_SHA/,
    );

    // widened for an old client, on reload: new handshakes follow it
    const wide = loadConfigText(yaml(o.address, ', ciphers: "ECDHE-RSA-AES128-SHA"'), {});
    assert.ok(wide.ok);
    const r = await z.rt.reload(wide.config);
    assert.equal(r.result, 'applied', r.errors.join('; '));
    assert.equal(
      await handshake(p, 'ECDHE-RSA-AES128-SHA', 'TLSv1.2'),
      'TLSv1.2 TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA',
    );
    assert.equal(
      await handshake(p, 'ECDHE-RSA-AES128-GCM-SHA256', 'TLSv1.2'),
      'refused',
      'the list replaced the default',
    );
    assert.match(await handshake(p, undefined, 'TLSv1.3'), /^TLSv1\.3 /);
  } finally {
    await z.stop();
  }
});

test('a client asking for a TLS 1.2 renegotiation is refused (no_renegotiation alert)', async () => {
  const o = await peers.origin();
  const z = await startRuntime(yaml(o.address));
  try {
    const [, p] = splitAddress(z.addr('tls'));
    const s = tlsConnect({ host: '127.0.0.1', port: p, rejectUnauthorized: false, maxVersion: 'TLSv1.2' });
    await once(s, 'secureConnect');
    const outcome = new Promise<string>((resolve) => {
      s.once('error', (e: NodeJS.ErrnoException) => resolve(String(e.code)));
      s.renegotiate({ rejectUnauthorized: false }, (err) => {
        if (err === null) resolve('renegotiated');
      });
    });
    // Node's client treats the server's refusal as fatal; without the refusal it renegotiates
    assert.equal(await outcome, 'ERR_SSL_NO_RENEGOTIATION');
    s.destroy();
  } finally {
    await z.stop();
  }
});

test('a cipher list OpenSSL cannot use is a config error at its path', () => {
  const r = loadConfigText(yaml('127.0.0.1:1', ', ciphers: "NOT-A-CIPHER:ALSO-NOT"'), {});
  assert.ok(!r.ok);
  const issue = r.issues.find((i) => i.path.includes('ciphers'));
  assert.ok(issue, JSON.stringify(r.issues));
  assert.match(issue.message, /OpenSSL knows none of these cipher suites/);
});

test('a certificate renewed in place (same paths, as certbot writes them) is read again at reload: new handshakes get it; a broken one keeps the old', async () => {
  const o = await peers.origin();
  const dir = tempDir('zl-renew-');
  const [crt, key] = [join(dir, 'site.crt'), join(dir, 'site.key')];
  const install = (name: string): void => {
    copyFileSync(join(TLS, `${name}.crt`), crt);
    copyFileSync(join(TLS, `${name}.key`), key);
  };
  install('a');
  const text = `
admin: { listen: 127.0.0.1:0 }
upstreams:
  app: { servers: [${o.address}] }
listeners:
  - { name: tls, protocol: https, listen: 127.0.0.1:0, upstream: app, tls: { cert: ${crt}, key: ${key} } }
`;
  const cfg = loadConfigText(text, {});
  assert.ok(cfg.ok);
  const z = await startRuntime(text);
  try {
    const [, p] = splitAddress(z.addr('tls'));
    const served = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const s = tlsConnect({ host: '127.0.0.1', port: p, rejectUnauthorized: false });
        s.once('secureConnect', () => {
          resolve(String(s.getPeerCertificate().subject.CN));
          s.destroy();
        });
        s.once('error', reject);
      });
    assert.equal(await served(), 'a.test');
    const unchanged = await z.rt.reload(cfg.config);
    assert.deepEqual(unchanged.listeners.changed, [], 'nothing renewed: nothing applied');
    install('b');
    const renewed = await z.rt.reload(cfg.config);
    assert.equal(renewed.result, 'applied', renewed.errors.join('; '));
    assert.deepEqual(renewed.listeners.changed, ['tls']);
    assert.equal(await served(), 'b.test');
    // half written (a key that is not a key): refused, the renewed one stays
    writeFileSync(key, 'not a key\n');
    const broken = await z.rt.reload(cfg.config);
    assert.equal(broken.result, 'partial');
    assert.match(broken.errors.join('\n'), /listener tls: .*; its previous settings stay/);
    assert.equal(await served(), 'b.test');
  } finally {
    await z.stop();
  }
});
