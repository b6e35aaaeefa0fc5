import { errorFactory, type ErrorTable } from '@damselfly/shared';

/**
 * Every error the peer engine raises on purpose: code, message, HTTP status. The codes keep their `DF_` prefix: they
 * reach clients of the dfdaemon and of dfget, which have always seen them under that name.
 */
export const PeerErrors = {
  DF_SUPERNODE_UNAVAILABLE: { message: 'no supernode reachable: %s', status: 503 },
  DF_SUPERNODE_ERROR: { message: 'supernode refused: %s', status: 502 },
  DF_PIECE_FAILED: { message: 'piece could not be fetched from any source: %s', status: 502 },
  DF_TASK_FAILED: { message: 'download failed: %s', status: 502 },
  DF_DISK_FULL: { message: 'disk full: %s', status: 507 },
  DF_SHUTTING_DOWN: { message: 'dfdaemon is shutting down%s', status: 503 },
} as const satisfies ErrorTable<string>;

export type PeerErrorCode = keyof typeof PeerErrors;
export const peerError = errorFactory(PeerErrors);
