/**
 * The header field names zipline acts on, recognised from the bytes without building a string
 * (a lower-cased string per field cost ~5 % of a proxied request). `fieldName(buf, start, end)`
 * returns one of the `F` constants, or `F.OTHER`.
 */
export const F = {
  OTHER: 0,
  CONTENT_LENGTH: 1,
  TRANSFER_ENCODING: 2,
  CONNECTION: 3,
  KEEP_ALIVE: 4,
  PROXY_CONNECTION: 5,
  TE: 6,
  TRAILER: 7,
  UPGRADE: 8,
  PROXY_AUTHORIZATION: 9,
  PROXY_AUTHENTICATE: 10,
  HOST: 11,
  EXPECT: 12,
  X_FORWARDED_FOR: 13,
  X_FORWARDED_PROTO: 14,
  X_FORWARDED_HOST: 15,
  X_REAL_IP: 16,
  X_REQUEST_ID: 17,
  IDEMPOTENCY_KEY: 18,
  RETRY_AFTER: 19,
  USER_AGENT: 20,
  REFERER: 21,
} as const;

export type FieldId = (typeof F)[keyof typeof F];

/** Every name `fieldName` recognises, lower case, with its id. */
export const KNOWN_NAMES: readonly (readonly [string, FieldId])[] = [
  ['content-length', F.CONTENT_LENGTH],
  ['transfer-encoding', F.TRANSFER_ENCODING],
  ['connection', F.CONNECTION],
  ['keep-alive', F.KEEP_ALIVE],
  ['proxy-connection', F.PROXY_CONNECTION],
  ['te', F.TE],
  ['trailer', F.TRAILER],
  ['upgrade', F.UPGRADE],
  ['proxy-authorization', F.PROXY_AUTHORIZATION],
  ['proxy-authenticate', F.PROXY_AUTHENTICATE],
  ['host', F.HOST],
  ['expect', F.EXPECT],
  ['x-forwarded-for', F.X_FORWARDED_FOR],
  ['x-forwarded-proto', F.X_FORWARDED_PROTO],
  ['x-forwarded-host', F.X_FORWARDED_HOST],
  ['x-real-ip', F.X_REAL_IP],
  ['x-request-id', F.X_REQUEST_ID],
  ['idempotency-key', F.IDEMPOTENCY_KEY],
  ['retry-after', F.RETRY_AFTER],
  ['user-agent', F.USER_AGENT],
  ['referer', F.REFERER],
];

/** Candidates by name length; each as lower-case bytes. */
const BY_LENGTH: { bytes: Uint8Array; id: FieldId }[][] = [];
for (const [name, id] of KNOWN_NAMES) {
  const list = BY_LENGTH[name.length] ?? [];
  BY_LENGTH[name.length] = list;
  list.push({ bytes: Buffer.from(name, 'latin1'), id });
}

export function fieldName(buf: Uint8Array, start: number, end: number): FieldId {
  const candidates = BY_LENGTH[end - start];
  if (candidates === undefined) return F.OTHER;
  outer: for (const c of candidates) {
    const b = c.bytes;
    for (let i = 0; i < b.length; i++) {
      if (((buf[start + i] as number) | 0x20) !== b[i]) continue outer;
    }
    return c.id;
  }
  return F.OTHER;
}
