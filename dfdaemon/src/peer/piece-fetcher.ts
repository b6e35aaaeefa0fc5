/** Fetches one assigned piece over HTTP from a peer or the supernode into the local task, verifying it. */
import { request, type Dispatcher } from 'undici';
import { PIECE_SHA_HEADER, discard, type Assignment } from '@damselfly/shared';
import type { LocalTask } from '../storage/local-task.js';
import { dfError } from '../errors.js';

export async function fetchPiece(
  task: LocalTask,
  a: Assignment,
  opts: { dispatcher: Dispatcher; timeoutMs: number; signal: AbortSignal },
): Promise<number> {
  const signal = AbortSignal.any([opts.signal, AbortSignal.timeout(opts.timeoutMs)]);
  const res = await request(a.url, { dispatcher: opts.dispatcher, signal, headersTimeout: opts.timeoutMs, bodyTimeout: opts.timeoutMs });
  if (res.statusCode !== 200) {
    const text = (await res.body.text().catch(() => '')).slice(0, 300);
    const e = dfError('DF_PIECE_FAILED', `${a.from} answered ${res.statusCode} for piece ${a.piece}: ${text}`);
    Object.assign(e, { status: res.statusCode, upstream: text });
    throw e;
  }
  const headerSha = res.headers[PIECE_SHA_HEADER];
  // Peers' own claims about a hash are never used: only the supernode's (in the assignment or its own response).
  const expectedSha = a.sha256 ?? (a.from === 'supernode' && typeof headerSha === 'string' ? headerSha : undefined);
  if (!expectedSha) {
    discard(res.body);
    throw dfError('DF_PIECE_FAILED', `no trusted sha256 for piece ${a.piece} from ${a.from}`);
  }
  await task.writePiece(a.piece, res.body, { expectedSha, signal });
  return task.range(a.piece).length;
}
