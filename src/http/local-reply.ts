/**
 * Routes zipline answers itself, without an upstream: `routes[].redirect` (nginx `return 301
 * https://$host$request_uri`, Caddy `redir`) and `routes[].respond` (nginx `return 200 "ok"`,
 * Caddy `respond`: a health check, a maintenance page, a robots.txt). Compiled once: a redirect's
 * target is a list of literal parts and placeholders filled from the request head; a body is kept
 * as the latin1 string of its UTF-8 bytes (what the HTTP/1.1 write path sends) and as a Buffer.
 */
import { STATUS_CODES } from 'node:http';
import type { OutgoingHttpHeaders } from 'node:http2';
import type { RequestHead } from './parser/request-head.js';
import { pathOf, stripPort } from './route-table.js';

/** Placeholders of `redirect.to`, filled from the request. */
export const PLACEHOLDERS = ['host', 'uri', 'path', 'query'] as const;
type Placeholder = (typeof PLACEHOLDERS)[number];
type Part = string | { readonly p: Placeholder };

/** Splits a `redirect.to` template; a string describing the problem when it is malformed. */
export function parseTemplate(text: string): Part[] | string {
  const parts: Part[] = [];
  let rest = text;
  for (;;) {
    const open = rest.indexOf('{');
    if (open < 0) break;
    const close = rest.indexOf('}', open);
    const name = close < 0 ? '' : rest.slice(open + 1, close);
    if (!(PLACEHOLDERS as readonly string[]).includes(name)) {
      return `unknown placeholder "${rest.slice(open, close < 0 ? undefined : close + 1)}": use ${PLACEHOLDERS.map((p) => `{${p}}`).join(', ')}`;
    }
    if (open > 0) parts.push(rest.slice(0, open));
    parts.push({ p: name as Placeholder });
    rest = rest.slice(close + 1);
  }
  if (rest.length > 0) parts.push(rest);
  if (parts.some((p) => typeof p === 'string' && p.includes('}'))) return 'a "}" without its "{"';
  return parts;
}

export interface RedirectConfig {
  readonly to: string;
  readonly status: number;
}

export interface RespondConfig {
  readonly status: number;
  readonly body: string;
  readonly content_type: string;
}

export class LocalReply {
  readonly status: number;
  private readonly reason: string;
  /** A redirect's target, or null for `respond`. */
  private readonly location: readonly Part[] | null;
  private readonly bodyBytes: Buffer;
  /** `bodyBytes` as latin1 (one char per byte), for the HTTP/1.1 write. */
  private readonly bodyText: string;
  private readonly contentType: string | null;
  /** The route's `headers.response.set`, as header lines and as an object. */
  private readonly extraLines: string;
  private readonly extra: Readonly<Record<string, string>>;

  constructor(
    cfg: { redirect: RedirectConfig } | { respond: RespondConfig },
    set: ReadonlyMap<string, string>,
  ) {
    if ('redirect' in cfg) {
      const parts = parseTemplate(cfg.redirect.to);
      if (typeof parts === 'string') throw new Error(parts); // validated by the schema
      this.status = cfg.redirect.status;
      this.location = parts;
      this.bodyBytes = Buffer.alloc(0);
      this.contentType = null;
    } else {
      this.status = cfg.respond.status;
      this.location = null;
      // 204 and 304 have no body (RFC 9110 §15.3.5, §15.4.5)
      const none = this.status === 204 || this.status === 304;
      this.bodyBytes = none ? Buffer.alloc(0) : Buffer.from(cfg.respond.body, 'utf8');
      this.contentType = this.bodyBytes.length > 0 ? cfg.respond.content_type : null;
    }
    this.reason = STATUS_CODES[this.status] ?? 'Unknown';
    this.bodyText = this.bodyBytes.toString('latin1');
    this.extra = Object.fromEntries(set);
    this.extraLines = [...set].map(([k, v]) => `${k}: ${v}\r\n`).join('');
  }

  /** The HTTP/1.1 response: head, and body unless `withBody` is false (HEAD). */
  http1(head: RequestHead, keepAlive: boolean, withBody: boolean): string {
    let text = `HTTP/1.1 ${this.status} ${this.reason}\r\n`;
    if (this.location !== null) text += `Location: ${this.target(head)}\r\n`;
    if (this.contentType !== null) text += `Content-Type: ${this.contentType}\r\n`;
    if (this.status !== 204 && this.status !== 304) text += `Content-Length: ${this.bodyBytes.length}\r\n`;
    text += this.extraLines;
    if (!keepAlive) text += 'Connection: close\r\n';
    return withBody ? `${text}\r\n${this.bodyText}` : `${text}\r\n`;
  }

  /** The HTTP/2 response headers; the body is `body`. */
  h2(head: RequestHead): OutgoingHttpHeaders {
    const headers: OutgoingHttpHeaders = { ...this.extra, ':status': this.status };
    if (this.location !== null) headers.location = this.target(head);
    if (this.contentType !== null) headers['content-type'] = this.contentType;
    if (this.status !== 204 && this.status !== 304) headers['content-length'] = this.bodyBytes.length;
    return headers;
  }

  get body(): Buffer {
    return this.bodyBytes;
  }

  /** A redirect's `Location` for this request. */
  target(head: RequestHead): string {
    let out = '';
    for (const part of this.location ?? []) {
      if (typeof part === 'string') out += part;
      else out += fill(part.p, head);
    }
    return out;
  }
}

function fill(p: Placeholder, head: RequestHead): string {
  // the target as received (an absolute-form's authority is the host): path and query
  const uri = head.absoluteForm ? pathOf(head.target) : head.target;
  switch (p) {
    case 'host':
      return stripPort(head.host ?? '');
    case 'uri':
      return uri;
    case 'path': {
      const q = uri.indexOf('?');
      return q < 0 ? uri : uri.slice(0, q);
    }
    case 'query': {
      const q = uri.indexOf('?');
      return q < 0 ? '' : uri.slice(q + 1);
    }
  }
}
