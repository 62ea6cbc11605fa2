/**
 * A SOCKS5 server for one client connection (RFC 1928): method "no authentication", CONNECT and
 * UDP ASSOCIATE (BIND is answered 7, command not supported; an unknown address type 8). Reply
 * codes are the dialer's statuses, which are the tunnel's OPEN_ACK statuses: 2 not allowed, 5
 * refused, 6 timeout …
 * A SOCKS4 or 4a request is answered with SOCKS4's "request rejected" (91), so that its client
 * says so rather than "connection closed".
 * UDP: the association lives as long as its TCP connection; fragmented datagrams (FRAG ≠ 0) are
 * dropped, as most servers do; only the client's own address may use the relay port.
 */
import { createSocket } from 'node:dgram';
import { isIP, type Socket } from 'node:net';
import { unmappedIp } from '../config/address-list.js';
import { type ErrorCode, isZiplineError } from '../errors.js';
import {
  addressLength,
  type Destination,
  formatDestination,
  readAddress,
  writeAddress,
} from '../tunnel/address.js';
import { OPEN_STATUS } from '../tunnel/constants.js';
import { type Dialer, httpStatusOfReply, statusOf } from './dialer.js';
import type { EntryOptions, EntryResult } from './entry-server.js';
import { HandshakeReader, handshakeFailure, lingerFor, type ParseStep } from './handshake-reader.js';
import { pipeStream } from './pipe.js';

const CMD = { CONNECT: 1, BIND: 2, UDP_ASSOCIATE: 3 } as const;

interface Socks5Request {
  readonly cmd: number;
  readonly dest: Destination;
}

const BAD = Symbol('bad');
/** An address type other than 1, 3 and 4: reply 8 (RFC 1928 §6). */
const BAD_ADDRESS_TYPE = Symbol('bad address type');
const REPLY_ADDRESS_TYPE_NOT_SUPPORTED = 8;
/** A SOCKS4/4a request (version 4): answered VN 0, CD 91 "request rejected or failed". */
const SOCKS4 = Symbol('socks4');
const SOCKS4_REJECTED = Buffer.from([0, 91, 0, 0, 0, 0, 0, 0]);

function parseGreeting(b: Buffer): ParseStep<boolean | typeof BAD | typeof SOCKS4> {
  if (b.length < 2) return { need: true };
  if (b[0] === 4) return { done: SOCKS4, used: b.length };
  if (b[0] !== 5) return { done: BAD, used: b.length };
  const n = b[1] as number;
  if (b.length < 2 + n) return { need: true };
  return { done: b.subarray(2, 2 + n).includes(0), used: 2 + n };
}

function parseRequest(b: Buffer): ParseStep<Socks5Request | typeof BAD | typeof BAD_ADDRESS_TYPE> {
  if (b.length < 5) return { need: true };
  if (b[0] !== 5 || b[2] !== 0) return { done: BAD, used: b.length };
  const type = b[3];
  const need =
    type === 1 ? 4 + 4 + 2 : type === 4 ? 4 + 16 + 2 : type === 3 ? 4 + 1 + (b[4] as number) + 2 : -1;
  if (need < 0) return { done: BAD_ADDRESS_TYPE, used: b.length };
  if (b.length < need) return { need: true };
  const a = readAddress(b, 3);
  if (a === null) return { done: BAD, used: b.length };
  return { done: { cmd: b[1] as number, dest: a.dest }, used: a.end };
}

function reply(status: number, bound: Destination = { host: '0.0.0.0', port: 0 }): Buffer {
  const out = Buffer.alloc(3 + addressLength(bound));
  out[0] = 5;
  out[1] = status;
  writeAddress(out, 3, bound);
  return out;
}

export async function serveSocks5(
  socket: Socket,
  dialer: Dialer,
  opts: EntryOptions,
  done: (r: EntryResult) => void,
): Promise<void> {
  const reader = new HandshakeReader(socket, 1024);
  let timedOut = false;
  const timer =
    opts.headerTimeoutMs > 0
      ? setTimeout(() => {
          timedOut = true;
          socket.destroy();
        }, opts.headerTimeoutMs)
      : undefined;
  let result: EntryResult = { method: 'SOCKS5', dest: '', status: 400, error: null };
  /** Answers `status` (a SOCKS5 reply) and closes; the access line's status follows it unless given. */
  const fail = (status: number, error: ErrorCode | null, logged = httpStatusOfReply(status)): void => {
    clearTimeout(timer);
    result = { ...result, status: logged, reply: status, error };
    reader.refuse(reply(status), lingerFor(opts));
    done(result);
  };
  /** Refused at the greeting: an answer in the client's protocol when there is one, then closed. */
  const refuse = (answer: Buffer | null): void => {
    clearTimeout(timer);
    if (answer === null) socket.destroy();
    else reader.refuse(answer, lingerFor(opts));
    done({ ...result, status: 400, error: 'ZL_PROXY_BAD_REQUEST' });
  };
  socket.on('error', () => {});
  try {
    const acceptable = await reader.read(parseGreeting);
    if (acceptable === BAD) return refuse(null);
    if (acceptable === SOCKS4) return refuse(SOCKS4_REJECTED);
    // no method we offer (we offer "no authentication" only)
    if (!acceptable) return refuse(Buffer.from([5, 0xff]));
    socket.write(Buffer.from([5, 0]));
    const req = await reader.read(parseRequest);
    clearTimeout(timer); // the handshake is in; dialing has its own timeout
    if (req === BAD || req === BAD_ADDRESS_TYPE) {
      // a malformed request (another version, a reserved byte set, an empty name): RFC 1928 has
      // no reply of its own for it, so 1 (general failure), logged as the client's error it is
      fail(req === BAD ? OPEN_STATUS.FAILURE : REPLY_ADDRESS_TYPE_NOT_SUPPORTED, 'ZL_PROXY_BAD_REQUEST', 400);
      return;
    }
    result = { ...result, dest: formatDestination(req.dest) };
    if (req.cmd === CMD.CONNECT) {
      result = { ...result, method: 'CONNECT' };
      let far: Awaited<ReturnType<Dialer['connectTcp']>>;
      try {
        far = await dialer.connectTcp(req.dest);
      } catch (err) {
        fail(statusOf(err), isZiplineError(err) ? err.code : null);
        return;
      }
      clearTimeout(timer);
      if (socket.destroyed) {
        far.destroy();
        done({ ...result, status: 499, reply: OPEN_STATUS.OK, error: 'ZL_CLIENT_ABORTED' });
        return;
      }
      const early = reader.detach();
      socket.write(reply(OPEN_STATUS.OK));
      if (early.length > 0) far.write(early);
      pipeStream(far, socket, opts.idleTimeoutMs, (r) =>
        done({
          ...result,
          status: 200,
          reply: OPEN_STATUS.OK,
          bytesIn: r.fromSocket,
          bytesOut: r.toSocket,
          error: r.error,
        }),
      );
      return;
    }
    if (req.cmd === CMD.UDP_ASSOCIATE) {
      result = { ...result, method: 'UDP_ASSOCIATE' };
      clearTimeout(timer);
      reader.detach();
      await udpAssociate(socket, dialer, req.dest, reader, lingerFor(opts), (r) => done({ ...result, ...r }));
      return;
    }
    fail(7, 'ZL_PROXY_BAD_REQUEST'); // command not supported
  } catch (err) {
    clearTimeout(timer);
    socket.destroy();
    done(handshakeFailure(result, err, timedOut));
  }
}

async function udpAssociate(
  control: Socket,
  dialer: Dialer,
  hint: Destination,
  reader: HandshakeReader,
  lingerMs: number,
  done: (r: Partial<EntryResult>) => void,
): Promise<void> {
  const local = control.localAddress ?? '127.0.0.1';
  const family = isIP(local) === 6 ? 'udp6' : 'udp4';
  const relay = createSocket(family);
  let channel: Awaited<ReturnType<Dialer['openUdp']>>;
  try {
    channel = await dialer.openUdp(hint);
  } catch (err) {
    relay.close();
    reader.refuse(reply(statusOf(err)), lingerMs);
    done({
      status: httpStatusOfReply(statusOf(err)),
      reply: statusOf(err),
      error: isZiplineError(err) ? err.code : null,
    });
    return;
  }
  let client: { address: string; port: number } | null = null;
  let bytesIn = 0;
  let bytesOut = 0;
  let ended = false;
  const end = (): void => {
    if (ended) return;
    ended = true;
    relay.close();
    channel.close();
    control.destroy();
    done({ status: 200, reply: OPEN_STATUS.OK, bytesIn, bytesOut, error: null });
  };
  relay.on('error', end);
  const clientIp = unmappedIp(control.remoteAddress ?? '');
  relay.on('message', (msg, rinfo) => {
    // only the client that asked may use this relay port (RFC 1928 §7): its address exactly, and
    // the port it named in the request, or when it named none the port its first datagram came
    // from; a later sender never takes the replies over
    if (unmappedIp(rinfo.address) !== clientIp) return;
    const port = client?.port ?? (hint.port !== 0 ? hint.port : rinfo.port);
    if (rinfo.port !== port) return;
    if (msg.length < 4 || msg[0] !== 0 || msg[1] !== 0 || msg[2] !== 0) return; // RSV, FRAG 0
    const a = readAddress(msg, 3);
    if (a === null) return;
    client ??= { address: rinfo.address, port: rinfo.port };
    bytesIn += msg.length - a.end;
    channel.send(a.dest, msg.subarray(a.end));
  });
  channel.onMessage((from, data) => {
    if (client === null) return;
    const head = Buffer.alloc(3 + addressLength(from));
    writeAddress(head, 3, from);
    bytesOut += data.length;
    relay.send([head, data], client.port, client.address);
  });
  channel.onClose(end);
  // RFC 1928 §7: the association ends with the TCP connection, which only marks its life: it is
  // read (the handshake left it paused, and a paused socket never sees the client's FIN), and
  // the client's FIN ends it as its close does
  control.on('close', end);
  control.on('end', end);
  control.on('data', () => {});
  control.resume();
  relay.bind(0, local, () => {
    const a = relay.address();
    control.write(reply(OPEN_STATUS.OK, { host: a.address, port: a.port }));
  });
}
