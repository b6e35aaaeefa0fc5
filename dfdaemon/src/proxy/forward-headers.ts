/** Which client request headers travel on to the origin when the daemon fetches on the client's behalf. */
const HOP_BY_HOP = new Set([
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
  'content-length',
  'range',
  'if-range',
  'accept-encoding',
]);

/** End-to-end headers of the client request (Authorization, Accept…), minus hop-by-hop and Damselfly's own. */
export function originHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    const key = k.toLowerCase();
    if (v === undefined || HOP_BY_HOP.has(key) || key.startsWith('x-dragonfly-') || key.startsWith('x-damselfly-')) continue;
    out[key] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}
