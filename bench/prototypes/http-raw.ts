/**
 * Measurement prototype, not product code: the cheapest JavaScript HTTP/1.1 keep-alive proxy on
 * raw sockets built from src/http/parser and src/http/forward-head (one upstream connection per
 * client connection, Content-Length bodies only). It answers one question for issue 3: what a
 * JS raw-socket design costs per request beside nginx. Usage: node http-raw.js LISTEN_PORT UPSTREAM_PORT
 */
import { BlockList, connect, createServer, type Socket } from 'node:net';
import { buildForwardHead, isTrustedProxy } from '../../src/http/forward-head.js';
import { findHeadEnd, parseRequestHead } from '../../src/http/parser/request-head.js';
import { parseResponseHead } from '../../src/http/parser/response-head.js';

const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
const trusted = new BlockList();
const rules = { remove: new Set<string>(), set: new Map<string, string>() };

createServer({ noDelay: true }, (client) => {
  const upstream = connect({ port: upstreamPort as number, host: '127.0.0.1', noDelay: true });
  let inBuf: Buffer = Buffer.alloc(0);
  let outBuf: Buffer = Buffer.alloc(0);
  let reqBodyLeft = 0;
  let resBodyLeft = 0;
  let method = 'GET';
  let waiting = false; // a response head is expected
  const clientTrusted = isTrustedProxy(trusted, client.remoteAddress ?? '');
  const fail = (s: Socket): void => {
    client.destroy();
    upstream.destroy();
    void s;
  };
  client.on('error', () => fail(client));
  upstream.on('error', () => fail(upstream));
  client.on('close', () => upstream.destroy());
  upstream.on('close', () => client.destroy());
  client.on('data', (chunk: Buffer) => {
    if (reqBodyLeft > 0) {
      const n = Math.min(reqBodyLeft, chunk.length);
      upstream.write(chunk.subarray(0, n));
      reqBodyLeft -= n;
      chunk = chunk.subarray(n);
      if (chunk.length === 0) return;
    }
    inBuf = inBuf.length === 0 ? chunk : Buffer.concat([inBuf, chunk]);
    for (;;) {
      const end = findHeadEnd(inBuf, inBuf.length, 16384);
      if (end < 0) return;
      const head = parseRequestHead(inBuf, end);
      method = head.method;
      const fwd = buildForwardHead(head, {
        clientIp: client.remoteAddress ?? '',
        proto: 'http',
        trusted: clientTrusted,
        path: head.target,
        rules,
      });
      const body = Math.max(0, head.contentLength);
      const have = Math.min(body, inBuf.length - end);
      upstream.write(
        have > 0
          ? Buffer.concat([Buffer.from(fwd.head, 'latin1'), inBuf.subarray(end, end + have)])
          : fwd.head,
      );
      reqBodyLeft = body - have;
      waiting = true;
      inBuf = inBuf.subarray(end + have);
      if (inBuf.length === 0 || reqBodyLeft > 0) return;
    }
  });
  upstream.on('data', (chunk: Buffer) => {
    if (resBodyLeft > 0) {
      const n = Math.min(resBodyLeft, chunk.length);
      client.write(chunk.subarray(0, n));
      resBodyLeft -= n;
      chunk = chunk.subarray(n);
      if (chunk.length === 0) return;
    }
    outBuf = outBuf.length === 0 ? chunk : Buffer.concat([outBuf, chunk]);
    while (waiting) {
      const end = findHeadEnd(outBuf, outBuf.length, 16384);
      if (end < 0) return;
      const head = parseResponseHead(outBuf, end, method);
      const body = head.body === 'length' ? head.contentLength : 0;
      const have = Math.min(body, outBuf.length - end);
      client.write(outBuf.subarray(0, end + have));
      resBodyLeft = body - have;
      waiting = false;
      outBuf = outBuf.subarray(end + have);
    }
  });
}).listen(listenPort, '127.0.0.1');
process.on('SIGINT', () => process.exit(0)); // lets --cpu-prof write its profile
