/**
 * Wire constants of the MS tunnel protocol, version 1 (src/tunnel/SPEC.md, the project copy of
 * ../shared/design/tunnel-protocol.md). test/unit/tunnel-constants.test.ts pins each value
 * against both copies of the spec.
 */

/** "MS" */
export const MAGIC = 0x4d53;
export const PROTOCOL_VERSION = 1;
/** magic 2 + length 4 + type 1 + flags 1 + stream id 4 */
export const HEADER_SIZE = 12;
export const CRC_SIZE = 4;
/** Header + CRC: the bytes a frame costs beyond its payload. */
export const FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE;

export const DEFAULT_MAX_PAYLOAD = 16 * 1024;
/** The most a peer may negotiate for DATA/DATAGRAM payloads. */
export const MAX_MAX_PAYLOAD = 64 * 1024;
/** Control frames (every type but DATA/DATAGRAM). */
export const MAX_CONTROL_PAYLOAD = 64 * 1024;

export const FRAME = {
  HELLO: 0x01,
  HELLO_ACK: 0x02,
  REQUEST: 0x03,
  RESPONSE: 0x04,
  OPEN: 0x10,
  OPEN_ACK: 0x11,
  DATA: 0x12,
  WINDOW_UPDATE: 0x13,
  RST: 0x14,
  DATAGRAM: 0x15,
  PING: 0x20,
  GOAWAY: 0x21,
} as const;
export type FrameType = (typeof FRAME)[keyof typeof FRAME];

/** Frame type → lower-case name (`data`, `window_update`), for metric labels. */
export const FRAME_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(FRAME).map(([k, v]) => [v, k.toLowerCase()]),
);

/** Types 0x80–0xFF are extensions: unknown ones are ignored. 0x00–0x7F unknown → PROTOCOL_ERROR. */
export const FIRST_EXTENSION_TYPE = 0x80;

export const FLAG = { FIN: 0x01, ACK: 0x02, COMPRESSED: 0x04 } as const;

export const ERROR = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  FRAME_SIZE_ERROR: 4,
  CRC_ERROR: 5,
  AUTH_FAILED: 6,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  IDLE_TIMEOUT: 9,
  ENHANCE_YOUR_CALM: 10,
  REPLACED: 11,
  SHUTTING_DOWN: 12,
} as const;
export type TunnelErrorCode = (typeof ERROR)[keyof typeof ERROR];

/** Error code → name (`PROTOCOL_ERROR`), for logs and metric labels. */
export const ERROR_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(ERROR).map(([k, v]) => [v, k]),
);

/** OPEN kinds */
export const OPEN_KIND = { TCP: 1, UDP: 2 } as const;
/** Address types, as in SOCKS5. */
export const ADDRESS = { IPV4: 1, DOMAIN: 3, IPV6: 4 } as const;
/** OPEN_ACK statuses: SOCKS5 reply meanings. */
export const OPEN_STATUS = {
  OK: 0,
  FAILURE: 1,
  NOT_ALLOWED: 2,
  NETWORK_UNREACHABLE: 3,
  HOST_UNREACHABLE: 4,
  REFUSED: 5,
  TIMEOUT: 6,
} as const;

/** WINDOW_UPDATE deltas: 1 … 2^31 − 1. */
export const MAX_WINDOW_DELTA = 0x7fff_ffff;
