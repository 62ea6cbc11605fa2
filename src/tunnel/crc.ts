/**
 * CRC-32 (IEEE 802.3, as `zlib.crc32`) for frames. Both ends of a tunnel CRC every byte, and
 * Node's zlib.crc32 runs at ~5 GB/s here; the native addon (native/crc/crc32_core.c, PCLMULQDQ
 * folding, built at `npm install` on Linux) runs at ~25 GB/s. Payloads under 256 bytes stay on
 * zlib (a native call costs more than it saves); without the addon everything does.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { crc32 as zlibCrc32 } from 'node:zlib';

interface CrcBinding {
  crc32(view: Uint8Array): number;
  accelerated: boolean;
}

function load(): CrcBinding | null {
  // ZIPLINE_NO_NATIVE=1: every native part off, as on Windows and macOS (src/l4/native-pump.ts)
  if (process.platform !== 'linux' || process.env.ZIPLINE_NO_NATIVE === '1') return null;
  try {
    const path = fileURLToPath(new URL('../../../build/Release/zipline_crc.node', import.meta.url));
    const b = createRequire(import.meta.url)(path) as CrcBinding;
    return b.accelerated ? b : null;
  } catch {
    return null;
  }
}

const native = load();
const NATIVE_FROM = 256;

/** True when the accelerated CRC is in use (for /stats and tests). */
export const crcAccelerated = native !== null;

export const crc32: (data: Uint8Array) => number =
  native === null
    ? (data) => zlibCrc32(data)
    : (data) => (data.length >= NATIVE_FROM ? native.crc32(data) : zlibCrc32(data));
