/**
 * The field names a `Connection` header lists as connection options (RFC 9110 §7.6.1): they are
 * hop-by-hop and not forwarded. `close` and `keep-alive` are options, not field names. A message's
 * framing (`Content-Length`, `Transfer-Encoding`) and a request's `Host` are never removed this
 * way: without them the next hop would read a body as the start of another message, or a request
 * without the authority HTTP/1.1 requires.
 */
const NOT_REMOVABLE = new Set(['close', 'keep-alive', 'content-length', 'transfer-encoding', 'host']);

/** Adds the lower-case names `value` lists to `into` (made when the first one is found). */
export function connectionOptions(value: string, into: Set<string> | null): Set<string> | null {
  let names = into;
  for (const token of value.split(',')) {
    const t = token.trim().toLowerCase();
    if (t === '' || NOT_REMOVABLE.has(t)) continue;
    names ??= new Set();
    names.add(t);
  }
  return names;
}
