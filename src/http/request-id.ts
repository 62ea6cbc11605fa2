/**
 * X-Request-Id values: a random 64-bit prefix per process (renewed every 2^32 ids) and a counter,
 * as 32 hex characters. Unique within a process and unpredictable across processes, without a
 * call into the CSPRNG per request (which cost ~6 % of a proxied request's CPU when measured).
 */
import { randomBytes } from 'node:crypto';

let prefix = '';
let counter = 0x1_0000_0000; // forces a prefix on first use

export function nextRequestId(): string {
  if (counter >= 0x1_0000_0000) {
    prefix = randomBytes(8).toString('hex');
    counter = 0;
  }
  const n = counter++;
  return `${prefix}00000000${n.toString(16).padStart(8, '0')}`;
}
