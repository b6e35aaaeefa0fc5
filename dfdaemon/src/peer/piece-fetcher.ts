/**
 * Fetches one assigned piece over HTTP from a peer or the supernode into the local task, verifying it. The URL is
 * built here from the source's `scheme://host:port` and the fixed piece path: whatever a peer advertised, nothing
 * else of it is ever requested.
 */
import { request, type Dispatcher } from 'undici';
import { GRANT_HEADER, PIECE_SHA_HEADER, discard, peerPiecePath, supernodePiecePath, uploadBase, type Assignment } from '@damselfly/shared';
import type { LocalTask } from '../storage/local-task.js';
import { dfError } from '../errors.js';

export function pieceUrl(taskId: string, a: Assignment): string {
  const base = uploadBase(a.base);
  if (!base) throw dfError('DF_PIECE_FAILED', `assignment for piece ${a.piece} names no usable source address`);
  return base + (a.from === 'supernode' ? supernodePiecePath(taskId, a.piece) : peerPiecePath(taskId, a.piece));
}

export async function fetchPiece(
  task: LocalTask,
  a: Assignment,
  opts: { dispatcher: Dispatcher; timeoutMs: number; signal: AbortSignal },
): Promise<number> {
  const signal = AbortSignal.any([opts.signal, AbortSignal.timeout(opts.timeoutMs)]);
  const res = await request(pieceUrl(task.info.taskId, a), {
    dispatcher: opts.dispatcher,
    signal,
    headers: a.grant ? { [GRANT_HEADER]: a.grant } : {},
    headersTimeout: opts.timeoutMs,
    bodyTimeout: opts.timeoutMs,
  });
  if (res.statusCode !== 200) {
    const text = (await res.body.text().catch(() => '')).slice(0, 300);
    let remoteCode: string | undefined;
    try {
      const code = (JSON.parse(text) as { code?: unknown }).code;
      if (typeof code === 'string') remoteCode = code;
    } catch {}
    const e = dfError('DF_PIECE_FAILED', `${a.from} answered ${res.statusCode} for piece ${a.piece}: ${text}`);
    Object.assign(e, { status: res.statusCode, remoteCode, upstream: text });
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
