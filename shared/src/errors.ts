/**
 * Typed error codes, in the style of fastify's `lib/errors.js` and undici's `UND_ERR_*`:
 * every package keeps one table of `code -> { message, status }` and throws `DamselflyError`s made from it.
 */
export interface ErrorSpec {
  /** Human readable message; `%s` is replaced by the detail passed at throw time. */
  readonly message: string;
  /** HTTP status used when the error reaches an HTTP client. */
  readonly status: number;
}

export class DamselflyError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(code: string, spec: ErrorSpec, detail?: string, options?: { cause?: unknown }) {
    super(spec.message.replace('%s', detail ?? ''), options);
    this.name = 'DamselflyError';
    this.code = code;
    this.status = spec.status;
  }
}

export type ErrorTable<K extends string> = { readonly [P in K]: ErrorSpec };

/** Builds a `make(code, detail)` function bound to one package's table. */
export function errorFactory<K extends string>(table: ErrorTable<K>) {
  return (code: K, detail?: string, cause?: unknown): DamselflyError =>
    new DamselflyError(code, table[code], detail, cause === undefined ? undefined : { cause });
}

export function isDamselflyError(err: unknown, code?: string): err is DamselflyError {
  return err instanceof DamselflyError && (code === undefined || err.code === code);
}

/** Errors shared by every component. */
export const SharedErrors = {
  CONFIG_INVALID: { message: 'invalid configuration:\n%s', status: 500 },
  BAD_URL: { message: 'malformed URL: %s', status: 400 },
  BAD_DIGEST: { message: 'malformed digest: %s (want sha256:<64 hex>)', status: 400 },
  BAD_RANGE: { message: 'unsupported or malformed Range: %s', status: 400 },
  RANGE_NOT_SATISFIABLE: { message: 'range not satisfiable: %s', status: 416 },
  BAD_MESSAGE: { message: 'malformed message: %s', status: 400 },
  DIGEST_MISMATCH: { message: 'digest mismatch: %s', status: 502 },
} as const satisfies ErrorTable<string>;

export const sharedError = errorFactory(SharedErrors);

/** True if `err`, or what caused it, says bytes did not match their digest (here, or as the supernode found). */
export function isDigestMismatch(err: unknown): boolean {
  let e = err as { code?: string; remoteCode?: string; cause?: unknown } | undefined;
  for (let depth = 0; e && depth < 8; depth++, e = e.cause as typeof e) {
    if (e.code === 'DIGEST_MISMATCH' || e.remoteCode === 'SN_DIGEST_MISMATCH') return true;
  }
  return false;
}

/** A short one-line description of any thrown value, safe to log (never includes headers). */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
