/**
 * How every Damselfly HTTP server treats slow or silent clients: a client has 10 s to send its request headers
 * (checked every second, so a header-dribbling slow-loris socket is gone within ~11 s instead of minutes), the whole
 * request (headers and body) within `requestTimeout`, and a connection idle for `idleMs` is closed. On stop, every
 * connection is closed, keep-alive ones included, so a stopping server never waits on idle clients.
 */
import { tlsServerOptions, type TlsMaterial } from './trust-config.js';

export const SLOW_CLIENT = { headersTimeout: 10_000, connectionsCheckingInterval: 1_000 } as const;

/** Options for a fastify server (plain or TLS) with those rules. */
export function fastifyServerOptions(tls: TlsMaterial | undefined, { requestTimeout = 30_000, idleMs = 120_000 } = {}) {
  const https = tlsServerOptions(tls);
  return {
    ...(https ? { https: { ...https, ...SLOW_CLIENT } } : { http: { ...SLOW_CLIENT } }),
    requestTimeout,
    connectionTimeout: idleMs,
    forceCloseConnections: true,
  };
}
