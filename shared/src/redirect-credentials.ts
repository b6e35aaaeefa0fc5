/**
 * Credentials stay with their origin across redirects. undici's redirect interceptor drops only Authorization, Cookie
 * and Proxy-Authorization on a hop to another origin; origins also take API keys in headers of their own (GitLab's
 * `Private-Token`, Artifactory's `X-JFrog-Art-Api`, `X-Api-Key`), and registries redirect blob reads to object
 * storage. This interceptor sits under the redirect one and sees every hop: a hop whose origin (scheme, host, port) is
 * not the first one's goes without any header a requester gave that is not known to be plain (`isPlainHeader`);
 * Damselfly's own request headers (`range`, `accept-encoding`) stay.
 */
import type { Dispatcher } from 'undici';
import { isForwardedToOrigin } from './origin-headers.js';
import { isPlainHeader } from './task-id.js';

type Headers = Dispatcher.DispatchOptions['headers'];

/** A requester's header that may carry a credential (the origin's own API key header included). */
function isCredential(name: string): boolean {
  return isForwardedToOrigin(name) && !isPlainHeader(name);
}

function withoutCredentials(headers: Headers): Headers {
  if (headers == null) return headers;
  if (Array.isArray(headers)) {
    const out: string[] = [];
    // A flat [name, value, name, value…] list (what the redirect handler passes on), or [name, value] pairs.
    if (headers.length > 0 && Array.isArray(headers[0])) {
      for (const [k, v] of headers as unknown as [string, string][]) if (!isCredential(k)) out.push(k, v);
    } else {
      for (let i = 0; i < headers.length; i += 2) if (!isCredential(String(headers[i]))) out.push(String(headers[i]), String(headers[i + 1]));
    }
    return out;
  }
  const out: Record<string, string | string[] | undefined> = {};
  for (const [k, v] of Object.entries(headers as Record<string, string | string[] | undefined>)) if (!isCredential(k)) out[k] = v;
  return out;
}

/** To compose under `interceptors.redirect` (listed before it in `compose`, so its hops go through this). */
export function credentialsStayWithOrigin(): Dispatcher.DispatcherComposeInterceptor {
  // The redirect interceptor dispatches every hop of one request with the same handler: its first origin is kept by it.
  const firstOrigin = new WeakMap<object, string>();
  return (dispatch) => (opts, handler) => {
    const origin = String(opts.origin ?? '').replace(/\/+$/, '');
    const first = firstOrigin.get(handler);
    if (first === undefined) {
      firstOrigin.set(handler, origin);
      return dispatch(opts, handler);
    }
    return dispatch(first === origin ? opts : { ...opts, headers: withoutCredentials(opts.headers) }, handler);
  };
}
