/**
 * What an error is to the proxy's client: a status and the dfdaemon's `{code, message}`. An error answer carries it
 * as its status and JSON body; a link answer whose download failed carries it as its last line (see LinkLine), so
 * the client reads the same either way.
 */
export interface ErrorAnswer {
  status: number;
  code: string;
  message: string;
}

export function errorAnswer(err: unknown): ErrorAnswer {
  const e = err as { code?: unknown; status?: number; message?: string };
  const status = e.status && e.status >= 400 && e.status < 600 ? e.status : 502;
  return { status, code: typeof e.code === 'string' ? e.code : 'INTERNAL', message: e.message ?? String(err) };
}
