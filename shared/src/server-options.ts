/**
 * How every Damselfly HTTP server treats slow or silent clients: a client has 10 s to send its request headers
 * (checked every second, so a header-dribbling slow-loris socket is gone within ~11 s instead of minutes), the whole
 * request (headers and body) within `requestTimeout`, and a connection idle for `idleMs` is closed. On stop, every
 * connection is closed, keep-alive ones included, so a stopping server never waits on idle clients.
 */
import { once } from 'node:events';
import type { Server } from 'node:net';
import { errorFactory, type ErrorTable } from './errors.js';
import { tlsServerOptions, type TlsMaterial } from './trust-config.js';

export const ListenErrors = {
  LISTEN_FAILED: { message: 'cannot listen: %s', status: 500 },
} as const satisfies ErrorTable<string>;

const listenError = errorFactory(ListenErrors);

/**
 * Runs a listen and, if it fails, says which setting to change (`proxyPort 65001 on 127.0.0.1: address already in
 * use`), rather than a bare EADDRINUSE.
 */
export async function listenAs<T>(setting: string, host: string, port: number, listen: () => Promise<T>): Promise<T> {
  try {
    return await listen();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'EADDRINUSE' ? 'address already in use' : code === 'EACCES' ? 'permission denied' : code === 'EADDRNOTAVAIL' ? 'no such local address' : (err as Error).message;
    throw listenError('LISTEN_FAILED', `${setting} ${port} on ${host}: ${why}`, err);
  }
}

/** `server.listen(port, host)` as a promise that rejects on the listen error. */
export async function listenServer(server: Server, port: number, host: string): Promise<void> {
  server.listen(port, host);
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(err))]);
}

/**
 * Also `noDelay`: pieces go out block by block, each followed by a 32-byte hash; with Nagle's algorithm on, that small
 * write waits for the ACK of the block before it, which the receiver delays up to 40 ms (measured: one block per 25–40
 * ms instead of per 5 ms on loopback).
 */
export const SLOW_CLIENT = { headersTimeout: 10_000, connectionsCheckingInterval: 1_000, noDelay: true } as const;

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
