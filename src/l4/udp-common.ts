/**
 * What both UDP listeners share (the JavaScript one and the native one): compiled settings,
 * pre-bound metrics, and the accounting of an ended session (metrics + one access-log line).
 */
import type { UdpListenerConfig } from '../config/schema.js';
import { ERROR_CATALOG, type ErrorCode } from '../errors.js';
import { isoNow } from '../log/access-line.js';
import { metrics } from '../metrics/catalog.js';
import { type ClientAccess, compileClientAccess } from './client-access.js';
import type { L4Context } from './context.js';

export interface UdpListenerSettings {
  readonly upstream: string;
  readonly responses: number;
  readonly idleTimeoutMs: number;
  readonly maxSessions: number;
  readonly maxQueue: number;
  /** SO_RCVBUF of the listening socket; 0: the kernel default. */
  readonly receiveBuffer: number;
  readonly native: boolean;
  /** `clients`: the addresses served, or null for everyone. */
  readonly clients: ClientAccess | null;
}

/**
 * Keys a reload cannot change on a bound UDP listener: its data path is chosen when it binds (its
 * sessions still reply through that socket, so it cannot be swapped in place), and so is its
 * receive buffer.
 */
export function udpKeysForRestart(was: UdpListenerConfig, now: UdpListenerConfig): string[] {
  const keys: string[] = [];
  if (now.native !== was.native) keys.push('native');
  if (now.udp.receive_buffer !== was.udp.receive_buffer) keys.push('udp.receive_buffer');
  return keys;
}

export function compileUdp(cfg: UdpListenerConfig): UdpListenerSettings {
  return Object.freeze({
    upstream: cfg.upstream,
    responses: cfg.udp.responses,
    idleTimeoutMs: cfg.udp.idle_timeout,
    maxSessions: cfg.udp.max_sessions,
    maxQueue: cfg.udp.max_queue,
    receiveBuffer: cfg.udp.receive_buffer,
    native: cfg.native === 'auto',
    clients: compileClientAccess(cfg.clients),
  });
}

export type UdpMetrics = ReturnType<typeof udpMetrics>;

export function udpMetrics(name: string) {
  return {
    active: metrics.downstreamActive.labels(name),
    total: metrics.downstreamTotal.labels(name),
    rx: metrics.udpDatagrams.labels(name, 'rx'),
    tx: metrics.udpDatagrams.labels(name, 'tx'),
    bytesRx: metrics.downstreamBytes.labels(name, 'rx'),
    bytesTx: metrics.downstreamBytes.labels(name, 'tx'),
    duration: metrics.sessionDuration.labels(name),
  };
}

export type UdpCloseReason = 'responses' | 'idle' | 'error' | 'drain';

export interface UdpSessionSummary {
  readonly clientIp: string;
  readonly clientPort: number;
  readonly upstreamAddr: string;
  readonly startedAt: number;
  readonly datagramsIn: number;
  readonly datagramsOut: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly dropped: number;
  readonly error: ErrorCode | null;
  readonly closeReason: UdpCloseReason | null;
  readonly dataPath: 'native' | 'js';
}

/** Metrics and the access-log line for one ended session. */
export function recordUdpSessionEnd(
  ctx: L4Context,
  listener: string,
  settings: UdpListenerSettings,
  m: UdpMetrics,
  s: UdpSessionSummary,
): void {
  m.active.dec();
  const seconds = (Date.now() - s.startedAt) / 1000;
  m.duration.observe(seconds);
  if (s.error !== null) metrics.connectionErrors.labels(listener, s.error).inc();
  if (!ctx.accessLog.enabled) return;
  ctx.accessLog.write({
    time: isoNow(),
    listener,
    protocol: 'udp',
    client_ip: s.clientIp,
    client_port: s.clientPort,
    // as a TCP line's: the code's HTTP-like status (502 for those that have none)
    status: s.error === null ? 200 : ERROR_CATALOG[s.error].status || 502,
    upstream: settings.upstream,
    upstream_addr: s.upstreamAddr,
    attempts: 1,
    data_path: s.dataPath,
    response_time: seconds,
    datagrams_in: s.datagramsIn,
    datagrams_out: s.datagramsOut,
    bytes_in: s.bytesIn,
    bytes_out: s.bytesOut,
    dropped: s.dropped,
    error: s.error,
    close: s.closeReason,
  });
}
