/**
 * What the agent verifies one relay with: its entry's pinned fingerprint, or its `ca` file (else
 * the system's CAs and `NODE_EXTRA_CA_CERTS`), and the native engine's TLS context made from
 * them. A reload may bring other settings (`reconfigure`) or a CA file renewed in place
 * (`renewCa`); either applies from the next connection on (sessions made from the old context
 * keep their own reference to it).
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { readTlsFile } from '../config/named-files.js';
import type { TunnelAgentConfig } from '../config/schema.js';
import { dropTlsContext, tlsContext } from './native/native-session.js';
import { DEFAULT_TUNNEL_CIPHERS, normalizeFingerprint } from './tls.js';

export type RelayRef = TunnelAgentConfig['relays'][number];

export const AGENT_CIPHERS = `${DEFAULT_TUNNEL_CIPHERS}:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256`;

export class RelayTrust {
  /** The pin, normalized (hex), when the entry pins the relay. */
  pin: string | undefined;
  caFile: Buffer | undefined;
  /** The native engine's TLS context (0: not made yet). */
  private nativeCtx = 0;

  /** Reads the entry's `ca` file (a coded error when it cannot). */
  constructor(private entry: RelayRef) {
    this.caFile = readCa(entry);
    this.pin = pinOf(entry);
  }

  /**
   * Another entry for the same relay: reads the file it names now (a coded error, nothing
   * changed, when it cannot) and returns the change to apply.
   */
  reconfigure(entry: RelayRef): () => void {
    const caFile = readCa(entry);
    return () => {
      this.entry = entry;
      this.caFile = caFile;
      this.pin = pinOf(entry);
      this.dropContext();
    };
  }

  /**
   * The `ca` file read again: true when its bytes changed (what the next connection verifies
   * with); a coded error when it cannot be read (the previous one stays).
   */
  renewCa(): boolean {
    if (this.entry.ca === undefined || this.caFile === undefined) return false;
    const bytes = readTlsFile(this.entry.ca, `tunnel agent: cannot read the CA file ${this.entry.ca}`);
    if (bytes.equals(this.caFile)) return false;
    this.caFile = bytes;
    this.dropContext();
    return true;
  }

  /** The engine's TLS context: no verification with a pin (checked after the handshake), else the CA or system CAs. */
  nativeContext(): number {
    if (this.nativeCtx !== 0) return this.nativeCtx;
    let ca: string | undefined;
    if (this.pin === undefined) {
      ca = this.caFile?.toString() ?? rootCertificates.join('\n');
      const extra = process.env.NODE_EXTRA_CA_CERTS;
      if (this.caFile === undefined && extra !== undefined && extra !== '') {
        try {
          ca += `\n${readFileSync(extra, 'utf8')}`;
        } catch {
          // as Node: an unreadable NODE_EXTRA_CA_CERTS adds nothing
        }
      }
    }
    this.nativeCtx = tlsContext(false, { ciphers: AGENT_CIPHERS, ...(ca !== undefined ? { ca } : {}) });
    return this.nativeCtx;
  }

  /** Made again at the next connection that needs it. */
  dropContext(): void {
    if (this.nativeCtx !== 0) dropTlsContext(this.nativeCtx);
    this.nativeCtx = 0;
  }
}

function readCa(entry: RelayRef): Buffer | undefined {
  return entry.ca === undefined
    ? undefined
    : readTlsFile(entry.ca, `tunnel agent: cannot read the CA file ${entry.ca}`);
}

function pinOf(entry: RelayRef): string | undefined {
  return entry.fingerprint === undefined ? undefined : (normalizeFingerprint(entry.fingerprint) ?? undefined);
}
