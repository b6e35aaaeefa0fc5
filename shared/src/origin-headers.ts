/**
 * Which of a requester's headers travel to the origin when Damselfly fetches on its behalf. They come from whoever
 * asked (a dfdaemon's client, a cluster member registering a task, an operator's preheat) and may carry credentials,
 * nothing more: the request itself is Damselfly's. `host` would have an allowed origin's ingress serve another virtual
 * host, cached under the allowed URL; `range`, `accept-encoding` and the conditionals decide which bytes come back (and
 * undici sends a `Range` beside Damselfly's own `range`, names being case-insensitive); framing and connection headers
 * would break or smuggle requests on a kept-alive connection. One list for every origin request: probe, access check,
 * piece fetches, the sequential fallback, the fast path.
 */
const NOT_FORWARDED = new Set([
  'host',
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  'expect',
  'content-length',
  'range',
  'if-range',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-unmodified-since',
  'accept-encoding',
]);

/** Whether a header (any capitalisation) may go to the origin as the requester sent it. */
export function isForwardedToOrigin(name: string): boolean {
  return !NOT_FORWARDED.has(name.toLowerCase());
}

/** The requester's headers to send to the origin: names lowercased (one value per name), the others dropped. */
export function originRequestHeaders(headers: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers ?? {})) {
    const key = k.toLowerCase();
    if (!NOT_FORWARDED.has(key)) out[key] = v;
  }
  return out;
}
