import { errorFactory, type ErrorTable } from '@damselfly/shared';

/** dfget's own errors; each maps to a process exit code. */
export const DfgetErrors = {
  DFGET_USAGE: { message: '%s', status: 2 },
  DFGET_HTTP: { message: '%s', status: 3 },
  DFGET_DIGEST: { message: 'downloaded file does not match %s', status: 4 },
  DFGET_OUTPUT: { message: 'cannot write output: %s', status: 5 },
} as const satisfies ErrorTable<string>;

export const dfgetError = errorFactory(DfgetErrors);
