import { errorFactory, type ErrorTable } from '@damselfly/shared';

/** Every error the supernode raises on purpose: code, message, HTTP status. */
export const SupernodeErrors = {
  SN_TASK_NOT_FOUND: { message: 'unknown task %s', status: 404 },
  SN_PIECE_OUT_OF_RANGE: { message: 'piece %s does not exist', status: 416 },
  SN_BAD_PIECE_NUMBER: { message: 'bad piece number %s', status: 400 },
  SN_NOT_HELLO: { message: 'first message must be peer:hello, got %s', status: 400 },
  SN_SEED_FAILED: { message: 'seeding failed: %s', status: 502 },
  SN_SHUTTING_DOWN: { message: 'supernode is shutting down%s', status: 503 },
} as const satisfies ErrorTable<string>;

export type SupernodeErrorCode = keyof typeof SupernodeErrors;
export const snError = errorFactory(SupernodeErrors);
