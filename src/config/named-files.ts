/**
 * Files a config names whose bytes are the setting (TLS certificates, keys, CA bundles, CRLs),
 * kept as read, so that a reload can tell a file renewed in place (certbot, a CA's new CRL, a
 * secret remounted) from one that did not change: the config's text is the same, the file's
 * bytes are not. nginx and HAProxy read them again at every reload; so does zipline, and applies
 * them only when they differ.
 */
import { readFileSync } from 'node:fs';
import { ZiplineError } from '../errors.js';

/** Reads a file or throws a coded error naming it (`what`: "certificate", "CA file", …). */
export type ReadFile = (path: string, what: string) => Buffer;

/** The file's bytes, or ZL_TLS_CONFIG `${problem}: ENOENT` (what each TLS user's ReadFile throws). */
export function readTlsFile(path: string, problem: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ZiplineError('ZL_TLS_CONFIG', `${problem}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
}

export class NamedFiles {
  private readonly files: { path: string; what: string; bytes: Buffer }[] = [];

  constructor(private readonly read: ReadFile) {}

  /** Reads `path` (throwing as `read` does) and keeps its bytes. */
  take(path: string, what: string): Buffer {
    const bytes = this.read(path, what);
    this.files.push({ path, what, bytes });
    return bytes;
  }

  /** Some file's bytes differ from those taken; throws as `read` does when one cannot be read. */
  changed(): boolean {
    return this.files.some((f) => !this.read(f.path, f.what).equals(f.bytes));
  }
}
