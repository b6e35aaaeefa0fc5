/**
 * What an error is to the proxy's client: a status and the dfdaemon's `{code, message}`. An error answer carries it
 * as its status and JSON body; a link answer whose download failed carries it as its last line (see LinkLine), so
 * the client reads the same either way.
 */
import { isDigestMismatch } from '@damselfly/shared';

export interface ErrorAnswer {
  status: number;
  code: string;
  message: string;
}

/**
 * Bytes that did not match their digest are `DIGEST_MISMATCH` however the error reached the proxy (the supernode's
 * refusal, a cause under a task failure): the one code a client tells apart, so it never has to read the message.
 */
export function errorAnswer(err: unknown): ErrorAnswer {
  const e = err as { code?: unknown; status?: number; message?: string };
  const status = e.status && e.status >= 400 && e.status < 600 ? e.status : 502;
  const code = isDigestMismatch(err) ? 'DIGEST_MISMATCH' : typeof e.code === 'string' ? e.code : 'INTERNAL';
  return { status, code, message: e.message ?? String(err) };
}
