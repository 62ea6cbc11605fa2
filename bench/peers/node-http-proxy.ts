/**
 * The node-http-proxy peer (`http-proxy` from npm, as most Node users deploy it): a `node:http`
 * server proxying with a keep-alive agent. Usage: node node-http-proxy.js LISTEN_PORT TARGET_PORT
 */
import { Agent, createServer } from 'node:http';
import httpProxy from 'http-proxy';

const [listen, target] = process.argv.slice(2).map(Number);
const agent = new Agent({ keepAlive: true, maxSockets: 1024 });
const proxy = httpProxy.createProxyServer({ target: `http://127.0.0.1:${target}`, agent, xfwd: true });
proxy.on('error', (_err, _req, res) => {
  if ('writeHead' in res && !res.headersSent) res.writeHead(502);
  res.end();
});
createServer((req, res) => proxy.web(req, res)).listen(listen, '127.0.0.1');
