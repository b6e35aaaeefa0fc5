import { errorFactory, type ErrorTable } from '@damselfly/shared';

/**
 * dfget's own errors. `status` is the process exit code (the README's table), so the code that ends a run is data
 * carried by the error, never read back from a message.
 */
export const DfgetErrors = {
  DFGET_USAGE: { message: '%s', status: 2 },
  /** The transfer failed: the network, the origin, a supernode or the dfdaemon (its own disk included). */
  DFGET_HTTP: { message: '%s', status: 3 },
  DFGET_TIMEOUT: { message: 'timed out after %s s', status: 3 },
  DFGET_DIGEST: { message: 'digest mismatch: %s', status: 4 },
  /** Writing the user's -O destination (file or stdout) failed. */
  DFGET_OUTPUT: { message: 'cannot write output: %s', status: 5 },
  /** The reader of `-O -` went away (`| head`): like a tool killed by SIGPIPE, 128 + 13, and nothing to say. */
  DFGET_PIPE_CLOSED: { message: 'stdout closed by its reader%s', status: 141 },
  DFGET_SIGINT: { message: 'interrupted (SIGINT)%s', status: 130 },
  DFGET_SIGTERM: { message: 'interrupted (SIGTERM)%s', status: 143 },
  DFGET_SIGHUP: { message: 'hung up (SIGHUP)%s', status: 129 },
} as const satisfies ErrorTable<string>;

export type DfgetErrorCode = keyof typeof DfgetErrors;

export const dfgetError = errorFactory(DfgetErrors);

/** Ends a run without a message: the only reader of the output chose to stop, which is not a failure to report. */
export const QUIET_CODES: ReadonlySet<string> = new Set<DfgetErrorCode>(['DFGET_PIPE_CLOSED']);
