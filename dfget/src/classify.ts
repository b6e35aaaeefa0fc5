/**
 * Turns whatever ended a run into an exit status and a message. dfget's own errors carry their status; errors from
 * the libraries it drives (the one-shot peer, undici, node) are sorted by their `code`s, which are data: a digest
 * mismatch anywhere is 4, any other typed transfer error or network failure is 3, and anything unforeseen is 1.
 */
import { DamselflyError, isDigestMismatch } from '@damselfly/shared';
import { DfgetErrors, QUIET_CODES, dfgetError, type DfgetErrorCode } from './errors.js';

/** Network-level failures: the socket, DNS, or undici's own transport errors. */
const NETWORK_CODE = /^(BULK_\w+|ECONNREFUSED|ECONNRESET|ECONNABORTED|EHOSTUNREACH|ENETUNREACH|ENETDOWN|ETIMEDOUT|EPIPE|ENOTFOUND|EAI_AGAIN|EPROTO|UND_ERR_\w+)$/;

export function isDfgetError(err: unknown): err is DamselflyError & { code: DfgetErrorCode } {
  return err instanceof DamselflyError && Object.hasOwn(DfgetErrors, err.code);
}

/** Every `code` along an error's cause chain. */
export function codesOf(err: unknown): string[] {
  const out: string[] = [];
  let e = err as { code?: unknown; cause?: unknown } | undefined;
  for (let depth = 0; e && typeof e === 'object' && depth < 8; depth++, e = e.cause as typeof e) {
    if (typeof e.code === 'string') out.push(e.code);
  }
  return out;
}

export function hasCode(err: unknown, ...codes: string[]): boolean {
  return codesOf(err).some((c) => codes.includes(c));
}

export function isNetworkError(err: unknown): boolean {
  return codesOf(err).some((c) => NETWORK_CODE.test(c));
}

/** The dfget error a thrown value stands for, or undefined for a bug or something unforeseen (exit 1). */
export function toDfgetError(err: unknown): DamselflyError | undefined {
  if (isDfgetError(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (isDigestMismatch(err)) return dfgetError('DFGET_DIGEST', message.replace(/^digest mismatch: /, ''), err);
  // Any other typed error of the transfer machinery (origin, supernode, piece, peer) is a failed transfer.
  if (err instanceof DamselflyError || isNetworkError(err)) return dfgetError('DFGET_HTTP', message, err);
  return undefined;
}

export interface Outcome {
  status: number;
  /** The one line for stderr, without the `dfget: ` prefix; undefined for a quiet end. */
  message?: string;
}

export function outcomeOf(err: unknown): Outcome {
  const e = toDfgetError(err);
  if (!e) return { status: 1, message: err instanceof Error ? `${err.message}` : String(err) };
  return { status: e.status, message: QUIET_CODES.has(e.code) ? undefined : e.message };
}
