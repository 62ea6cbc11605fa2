import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bindFailure } from '../../src/l4/bind-failure.js';

const err = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`listen ${code}`), { code });

test('a failed bind names its errno code and, for the usual causes, what to do', () => {
  assert.match(
    bindFailure(err('EACCES'), '0.0.0.0:80'),
    /^EACCES \(ports below 1024 need root or CAP_NET_BIND_SERVICE/,
  );
  assert.equal(bindFailure(err('EACCES'), '0.0.0.0:8080'), 'EACCES', 'not a privileged port: no hint');
  assert.equal(
    bindFailure(err('EADDRINUSE'), '[::1]:443'),
    'EADDRINUSE (another process is listening there)',
  );
  assert.equal(bindFailure(err('EADDRINUSE'), ':9', 'held'), 'EADDRINUSE (held)');
  assert.equal(
    bindFailure(err('EADDRNOTAVAIL'), '10.9.9.9:1'),
    'EADDRNOTAVAIL (no interface of this host has that address)',
  );
  assert.equal(bindFailure(new Error('odd'), '127.0.0.1:1'), 'odd');
});
