/**
 * The baseline the issue quotes: a plain Node `net` proxy (`socket.pipe(upstream)` both ways),
 * and a plain Node UDP relay. Usage: node node-pipe.js LISTEN_PORT TARGET_PORT [UDP_LISTEN UDP_TARGET]
 */
import { createSocket } from 'node:dgram';
import { connect, createServer } from 'node:net';

const [listen, target, udpListen, udpTarget] = process.argv.slice(2).map(Number);
// allowHalfOpen on both sides so a client's FIN is forwarded (the bulk test needs it)
createServer({ allowHalfOpen: true }, (c) => {
  const u = connect({ port: target as number, host: '127.0.0.1', noDelay: true, allowHalfOpen: true });
  c.setNoDelay(true);
  c.pipe(u).pipe(c);
  c.on('error', () => u.destroy());
  u.on('error', () => c.destroy());
}).listen(listen, '127.0.0.1');

if (udpListen !== undefined && udpTarget !== undefined) {
  const front = createSocket('udp4');
  const back = new Map<string, ReturnType<typeof createSocket>>();
  front.on('message', (msg, r) => {
    const key = `${r.address}:${r.port}`;
    const s = back.get(key);
    if (s === undefined) {
      const sock = createSocket('udp4');
      sock.on('message', (reply) => front.send(reply, r.port, r.address));
      sock.connect(udpTarget, '127.0.0.1');
      back.set(key, sock);
      sock.once('connect', () => sock.send(msg));
      return;
    }
    s.send(msg);
  });
  front.bind(udpListen, '127.0.0.1');
}
