import { errorFactory, type ErrorTable } from '@damselfly/shared';

/** Every error the supernode raises on purpose: code, message, HTTP status. */
export const SupernodeErrors = {
  SN_TASK_NOT_FOUND: { message: 'unknown task %s', status: 404 },
  SN_PIECE_OUT_OF_RANGE: { message: 'piece %s does not exist', status: 416 },
  SN_BAD_PIECE_NUMBER: { message: 'bad piece number %s', status: 400 },
  SN_NOT_HELLO: { message: 'first message must be peer:hello, got %s', status: 400 },
  SN_SEED_FAILED: { message: 'seeding failed: %s', status: 502 },
  SN_SHUTTING_DOWN: { message: 'supernode is shutting down%s', status: 503 },
  SN_ORIGIN_FORBIDDEN: { message: 'origin not allowed: %s (add it to allowedOrigins)', status: 403 },
  SN_DIGEST_MISMATCH: { message: 'digest mismatch: the origin\'s bytes are not %s', status: 502 },
  SN_NOT_REGISTERED: { message: 'not registered for task %s', status: 403 },
  SN_TASK_NOT_JOINED: { message: 'register task %s before scheduling in it', status: 409 },
  SN_PROTOCOL_VERSION: { message: 'the peer speaks control protocol %s (upgrade dfdaemons and supernodes together)', status: 426 },
  SN_ALREADY_HELLO: { message: 'this session already said hello as %s (one socket is one peer)', status: 409 },
  SN_HELLO_PENDING: { message: 'another hello is still being answered on this session (one at a time): %s', status: 409 },
  SN_PEER_ID_TAKEN: { message: 'peer id %s belongs to another live session', status: 409 },
  SN_PEER_MISMATCH: { message: 'hello names %s, but the session authenticated another peer', status: 403 },
  SN_BAD_ADVERTISE: { message: 'upload address refused: %s', status: 403 },
  SN_TOO_MANY_TASKS: { message: 'session joined too many tasks: %s', status: 429 },
  SN_BUSY: { message: 'too busy%s', status: 503 },
  SN_RATE_LIMITED: { message: 'too many requests on this session%s', status: 429 },
  SN_BAD_IMAGE: { message: 'not an image reference: %s', status: 400 },
  SN_BAD_PREHEAT: { message: 'bad preheat request: %s', status: 400 },
  SN_MANIFEST: { message: 'cannot resolve the image: %s', status: 502 },
  SN_NO_PLATFORM: { message: 'the image has no manifest for %s', status: 404 },
  SN_PREHEAT_NOT_FOUND: { message: 'no preheat job %s', status: 404 },
  SN_SIBLING: { message: 'another supernode of the cluster: %s', status: 502 },
} as const satisfies ErrorTable<string>;

export type SupernodeErrorCode = keyof typeof SupernodeErrors;
export const snError = errorFactory(SupernodeErrors);
