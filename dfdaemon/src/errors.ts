import { errorFactory, type ErrorTable } from '@damselfly/shared';
import { PeerErrors } from '@damselfly/peer';

/** Every error dfdaemon raises on purpose: code, message, HTTP status (its peer engine's included). */
export const DaemonErrors = {
  ...PeerErrors,
  DF_PIECE_NOT_FOUND: { message: 'piece not here: %s', status: 404 },
  DF_UPLOAD_BUSY: { message: 'upload slots full%s', status: 503 },
  DF_PROXY_UNSUPPORTED: { message: 'not proxied: %s', status: 400 },
  DF_PROXY_FORBIDDEN: { message: 'host not allowed: %s (add it to registries or proxyHosts)', status: 403 },
  DF_NO_REGISTRY: { message: 'no upstream registry for %s (configure registries, or send ?ns= / X-Dragonfly-Registry)', status: 502 },
  DF_UPSTREAM: { message: 'upstream unreachable: %s', status: 502 },
  DF_ACCESS_DENIED: { message: 'the origin refused this client: %s', status: 403 },
  DF_ACCESS_UNVERIFIED: { message: 'could not check this client\'s access with the origin: %s', status: 502 },
} as const satisfies ErrorTable<string>;

export type DaemonErrorCode = keyof typeof DaemonErrors;
export const dfError = errorFactory(DaemonErrors);
