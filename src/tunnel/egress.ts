/**
 * How the agent reaches a relay: directly, or through a corporate proxy (`via`): HTTP CONNECT
 * (with basic auth from the URL) or SOCKS5 (no auth, or username/password per RFC 1929). When
 * `via` is unset, `HTTPS_PROXY`/`https_proxy` is used; `NO_PROXY`/`no_proxy` (comma-separated
 * names, `.suffix`, `*`, with optional `:port`) exempts relays either way.
 */
import { connect, type Socket } from 'node:net';
import { ZiplineError } from '../errors.js';
import { HandshakeReader } from '../proxy/handshake-reader.js';
import { encodeAddress } from './address.js';

export interface ViaProxy {
  readonly kind: 'http' | 'socks5';
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly password: string;
  /** For logs: the URL without credentials. */
  readonly display: string;
}

export function parseVia(text: string): ViaProxy | null {
  if (text === '') return null;
  const u = new URL(text);
  const kind = u.protocol === 'http:' || u.protocol === 'https:' ? 'http' : 'socks5';
  return {
    kind,
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: Number(u.port || (kind === 'http' ? 80 : 1080)),
    username: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    display: `${u.protocol}//${u.host}`,
  };
}

/** Whether NO_PROXY exempts `host:port`. */
export function noProxy(host: string, port: number, list: string | undefined): boolean {
  if (list === undefined || list.trim() === '') return false;
  const h = host.toLowerCase();
  for (const raw of list.split(',')) {
    let e = raw.trim().toLowerCase();
    if (e === '') continue;
    if (e === '*') return true;
    const m = /^(.*):(\d+)$/.exec(e);
    if (m !== null && !e.includes(']') && (m[1] as string).indexOf(':') < 0) {
      if (Number(m[2]) !== port) continue;
      e = m[1] as string;
    }
    if (e.startsWith('*.')) e = e.slice(1);
    if (e.startsWith('.') ? h.endsWith(e) || h === e.slice(1) : h === e || h.endsWith(`.${e}`)) return true;
  }
  return false;
}

/** The proxy to use for a relay: the configured `via`, else the environment's. */
export function proxyFor(
  host: string,
  port: number,
  via: string | undefined,
  env = process.env,
): ViaProxy | null {
  const text = via ?? env.HTTPS_PROXY ?? env.https_proxy ?? '';
  if (text === '') return null;
  if (noProxy(host, port, env.NO_PROXY ?? env.no_proxy)) return null;
  return parseVia(text);
}

function tcp(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, noDelay: true, keepAlive: true });
    const t = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error(`connect to ${host}:${port} timed out`), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(t);
      s.destroy();
      reject(err);
    });
  });
}

/** A connected transport to `host:port`, through `via` when given. */
export async function dialRelay(
  host: string,
  port: number,
  via: ViaProxy | null,
  timeoutMs: number,
): Promise<Socket> {
  if (via === null) return tcp(host, port, timeoutMs);
  const s = await tcp(via.host, via.port, timeoutMs);
  const timer = setTimeout(() => s.destroy(), timeoutMs);
  s.on('error', () => {});
  try {
    if (via.kind === 'http') await httpConnect(s, host, port, via);
    else await socks5Connect(s, host, port, via);
    return s;
  } catch (err) {
    s.destroy();
    throw err instanceof ZiplineError
      ? err
      : new ZiplineError('ZL_TUNNEL_VIA', `via ${via.display}: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

async function httpConnect(s: Socket, host: string, port: number, via: ViaProxy): Promise<void> {
  const authority = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const auth =
    via.username !== ''
      ? `Proxy-Authorization: Basic ${Buffer.from(`${via.username}:${via.password}`).toString('base64')}\r\n`
      : '';
  s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${auth}\r\n`);
  const reader = new HandshakeReader(s, 16 * 1024);
  const status = await reader.read((b) => {
    const end = b.indexOf('\r\n\r\n');
    if (end < 0) return { need: true as const };
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(b.toString('latin1', 0, Math.min(end, 64)));
    return { done: m === null ? 0 : Number(m[1]), used: end + 4 };
  });
  const rest = reader.detach();
  if (status !== 200) {
    throw new ZiplineError('ZL_TUNNEL_VIA', `via ${via.display}: CONNECT answered ${status || 'garbage'}`);
  }
  if (rest.length > 0) s.unshift(rest);
}

async function socks5Connect(s: Socket, host: string, port: number, via: ViaProxy): Promise<void> {
  const reader = new HandshakeReader(s, 1024);
  const userPass = via.username !== '';
  s.write(Buffer.from(userPass ? [5, 2, 0, 2] : [5, 1, 0]));
  const method = await reader.read((b) =>
    b.length < 2 ? { need: true as const } : { done: b[1] as number, used: 2 },
  );
  if (method === 2 && userPass) {
    const u = Buffer.from(via.username);
    const p = Buffer.from(via.password);
    s.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]));
    const ok = await reader.read((b) =>
      b.length < 2 ? { need: true as const } : { done: b[1] === 0, used: 2 },
    );
    if (!ok) throw new ZiplineError('ZL_TUNNEL_VIA', `via ${via.display}: SOCKS5 authentication refused`);
  } else if (method !== 0) {
    throw new ZiplineError('ZL_TUNNEL_VIA', `via ${via.display}: no acceptable SOCKS5 method`);
  }
  s.write(Buffer.concat([Buffer.from([5, 1, 0]), encodeAddress({ host, port })]));
  const rep = await reader.read((b) => {
    if (b.length < 5) return { need: true as const };
    const len = b[3] === 1 ? 4 : b[3] === 4 ? 16 : 1 + (b[4] as number);
    if (b.length < 4 + len + 2) return { need: true as const };
    return { done: b[1] as number, used: 4 + len + 2 };
  });
  const rest = reader.detach();
  if (rep !== 0) throw new ZiplineError('ZL_TUNNEL_VIA', `via ${via.display}: SOCKS5 reply ${rep}`);
  if (rest.length > 0) s.unshift(rest);
}
