/** Which client request headers travel on to the origin when the daemon fetches on the client's behalf. */
import { isForwardedToOrigin } from '@damselfly/shared';

/**
 * End-to-end headers of the client request (Authorization, Accept…), minus what never goes to an origin (hop-by-hop
 * and framing headers, Range, conditionals, Accept-Encoding, Expect: see origin-headers.ts) and Damselfly's own.
 */
export function originHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    const key = k.toLowerCase();
    if (v === undefined || !isForwardedToOrigin(key) || key.startsWith('x-dragonfly-') || key.startsWith('x-damselfly-')) continue;
    out[key] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}
