/**
 * A demo HTTP origin for the quickstart: says which instance answered and what it received, so
 * balancing, forwarding headers and failover can be seen with curl. `/healthz` answers 200.
 */
import { createServer, type Server } from 'node:http';

export function startHttpOrigin(name: string, host = '127.0.0.1', port = 0): Promise<Server> {
  const server = createServer((req, res) => {
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
    });
    req.on('end', () => {
      if (req.url === '/healthz') {
        res.end('ok\n');
        return;
      }
      const body = `${JSON.stringify(
        {
          origin: name,
          // HEAD gets the headers GET would (RFC 9110 §9.3.2), Content-Length included
          method: req.method === 'HEAD' ? 'GET' : req.method,
          url: req.url,
          body_bytes: bytes,
          forwarded_for: req.headers['x-forwarded-for'] ?? null,
          request_id: req.headers['x-request-id'] ?? null,
        },
        null,
        2,
      )}\n`;
      res.setHeader('Content-Type', 'application/json');
      // set here so that HEAD (`curl -I`) gets it too: node:http leaves it out when it drops the body
      res.setHeader('Content-Length', Buffer.byteLength(body));
      res.end(body);
    });
  });
  server.keepAliveTimeout = 65_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
