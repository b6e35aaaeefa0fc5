/**
 * What a dfdaemon's error answer means for dfget. The body is data: the daemon's JSON `{code, message}`, or the
 * upstream's own answer passed through (a registry's 404, an auth challenge). Only a digest mismatch keeps its own
 * exit code (4); every other daemon-side failure, its own full disk included, is a failed transfer (3): 5 is kept
 * for failures writing the user's -O, which the daemon never touches.
 */
import type { DamselflyError } from '@damselfly/shared';
import { dfgetError } from './errors.js';

export interface DaemonAnswer {
  status: number;
  body: string;
}

/** The daemon's own JSON error, if the body is one. */
export function daemonErrorBody(body: string): { code: string; message: string } | undefined {
  try {
    const j = JSON.parse(body) as { code?: unknown; message?: unknown };
    if (typeof j.code === 'string' && typeof j.message === 'string') return { code: j.code, message: j.message };
  } catch {}
  return undefined;
}

/** The daemon's refusal to proxy this host (dfget then fetches it itself), or undefined. */
export function proxyForbidden(a: DaemonAnswer): string | undefined {
  const e = daemonErrorBody(a.body);
  return e?.code === 'DF_PROXY_FORBIDDEN' ? e.message : undefined;
}

/** `before`: what happened first, when this answer came to the request for the rest of a cut transfer. */
export function daemonAnswerError(a: DaemonAnswer, daemon: string, url: URL, before?: string): DamselflyError {
  const lead = before ? `${before}, then answered ` : '';
  const e = daemonErrorBody(a.body);
  if (!e) {
    const text = a.body.replace(/\s+/g, ' ').trim().slice(0, 300);
    return dfgetError('DFGET_HTTP', `${lead}${a.status} from ${url.host} (via the dfdaemon at ${daemon})${text ? `: ${text}` : ''}`);
  }
  return daemonError({ status: a.status, ...e }, daemon, lead);
}

/** The dfdaemon's own error, from an error answer or a link answer's last line (see LinkLine). */
export function daemonError(e: { status: number; code: string; message: string }, daemon: string, lead = ''): DamselflyError {
  // The daemon (or the supernode behind it) found the bytes are not the digest asked for: the daemon says so with this
  // code however it learnt it, so the message is only shown, never read.
  if (e.code === 'DIGEST_MISMATCH') {
    return dfgetError('DFGET_DIGEST', `${lead ? `${lead}${e.status}: ` : ''}${e.message.replace(/^digest mismatch: /i, '')} (found by the dfdaemon at ${daemon})`);
  }
  const where = e.status === 507 || e.code === 'DF_DISK_FULL' ? " (the dfdaemon's own disk, not the output's)" : '';
  return dfgetError('DFGET_HTTP', `${lead || `the dfdaemon at ${daemon} answered `}${e.status} ${e.code}: ${e.message}${where}`);
}
