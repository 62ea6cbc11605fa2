/** Byte classes of RFC 9110 §5.6.2, as lookup tables (one array read per byte). */
export const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;

export function isTchar(byte: number): boolean {
  return TCHAR[byte] === 1;
}

/**
 * The token at `buf[start, end)` (a field name the parser accepted: ASCII only) as a lower-case
 * string: one copy and V8's own lower-casing, which returns the same string when there is nothing
 * to change (~45 ns a name; one string per character before, ~70).
 */
export function lowerAscii(buf: Buffer, start: number, end: number): string {
  return latin1(buf, start, end).toLowerCase();
}

/**
 * Whether the field name at `buf[start, end)` is `lower` (a lower-case token), ignoring ASCII
 * case, read from the bytes: no string per field, and most names are told apart by their length
 * alone.
 */
export function nameIs(buf: Buffer, start: number, end: number, lower: string): boolean {
  if (end - start !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    const c = buf[start + i] as number;
    if ((c >= 0x41 && c <= 0x5a ? c + 0x20 : c) !== lower.charCodeAt(i)) return false;
  }
  return true;
}

type Latin1Sliceable = Buffer & { latin1Slice(start: number, end: number): string };

/**
 * `buf[start, end)` as a latin1 string: Buffer's own `latin1Slice` (public on Buffer.prototype
 * since Node 0.x, used by `toString` itself), without `toString`'s argument handling and encoding
 * dispatch (~1 % of a proxied request, ten calls each). `start` and `end` must be in range.
 */
export function latin1(buf: Buffer, start: number, end: number): string {
  return (buf as Latin1Sliceable).latin1Slice(start, end);
}

/**
 * `latin1(buf, start, end)`, except that the values nearly every head carries (`Connection:
 * keep-alive` or `close`, the reason `OK`) are recognised from the bytes and returned as
 * constants: no call into C++ and no new string for them.
 */
export function commonLatin1(buf: Buffer, start: number, end: number): string {
  const len = end - start;
  if (len === 10 && isKeepAlive(buf, start)) return 'keep-alive';
  if (len === 5 && buf[start] === 0x63 && buf[start + 1] === 0x6c && buf[start + 2] === 0x6f) {
    if (buf[start + 3] === 0x73 && buf[start + 4] === 0x65) return 'close';
  }
  if (len === 2 && buf[start] === 0x4f && buf[start + 1] === 0x4b) return 'OK';
  return latin1(buf, start, end);
}

/** `keep-alive` at `buf[start]`, exactly as written (other cases go through `latin1`). */
function isKeepAlive(buf: Buffer, s: number): boolean {
  return (
    buf[s] === 0x6b &&
    buf[s + 1] === 0x65 &&
    buf[s + 2] === 0x65 &&
    buf[s + 3] === 0x70 &&
    buf[s + 4] === 0x2d &&
    buf[s + 5] === 0x61 &&
    buf[s + 6] === 0x6c &&
    buf[s + 7] === 0x69 &&
    buf[s + 8] === 0x76 &&
    buf[s + 9] === 0x65
  );
}
