/**
 * What a failed piece transfer means: what the supernode is told it was (its blame and scheduling depend on it), and
 * whether the download tries again, registers again, or ends. Pure: the run keeps the counts.
 */
import { describeError, isDiskFull, isTransferTimeout, originError, sharedError } from '@damselfly/shared';
import { peerError } from './errors.js';

/** Statuses from the origin that retrying or another route will not change: pass them to the client. */
const FINAL_STATUS = new Set([401, 403, 404]);

/** Peer failures on one piece that end a download anyway (the scheduler should have moved it to the supernode). */
export const PEER_FAILURE_CAP = 16;

export type FailureReason = 'corrupt' | 'timeout' | 'error';

/**
 * A wrong hash, a wrong length from a source that knows the piece's size, and an answer that is not HTTP as cluster
 * members speak it are all bad data; a stalled or too slow source is a timeout.
 */
export function failureReason(err: unknown): FailureReason {
  const code = (err as { code?: string }).code;
  if (code === 'PIECE_CORRUPT' || code === 'PIECE_SHORT' || code === 'BULK_PROTOCOL') return 'corrupt';
  if (isTransferTimeout(err) || code === 'BULK_HEADERS_TIMEOUT' || code === 'BULK_BODY_TIMEOUT') return 'timeout';
  return 'error';
}

export interface FailureContext {
  taskId: string;
  piece: number;
  fromSupernode: boolean;
  /** Failed attempts at this piece from this kind of source (supernode or peers) in this run, this one included. */
  tries: number;
  /** Attempts from the supernode before the download gives up. */
  pieceAttempts: number;
}

/** `retry`: ask for the piece again; `reregister`: hand the supernode this request's credentials again first. */
export type FailureVerdict = 'retry' | 'reregister' | { fatal: unknown };

export function judgeFailure(err: unknown, f: FailureContext): FailureVerdict {
  const code = (err as { code?: string }).code;
  const status = (err as { status?: number }).status;
  const remoteCode = (err as { remoteCode?: string }).remoteCode ?? '';
  if (isDiskFull(err)) return { fatal: peerError('DF_DISK_FULL', describeError(err), err) };
  // What an answer says of the task is taken from the supernode only: a peer's upload server could say anything, and
  // any of these would end the download (and drop what it cached) on a word from an untrusted member.
  if (f.fromSupernode) {
    // The supernode found the origin's bytes are not the digest's, or dropped the task for it: no retry helps.
    if (remoteCode === 'SN_DIGEST_MISMATCH') return { fatal: sharedError('DIGEST_MISMATCH', describeError(err), err) };
    // The object changed at the origin while the supernode seeded it (no digest to hold it to): its task is gone there.
    if (remoteCode === 'ORIGIN_CHANGED') return { fatal: originError('ORIGIN_CHANGED', describeError(err), err) };
    if (remoteCode === 'SN_TASK_NOT_FOUND') return { fatal: peerError('DF_TASK_FAILED', `the supernode no longer has task ${f.taskId}`, err) };
    // The supernode let go of this peer's origin credentials (unused too long, or it restarted).
    if (remoteCode === 'SN_NOT_REGISTERED' && f.tries < f.pieceAttempts) return 'reregister';
  }
  // Only the origin's own refusal (relayed by the supernode) is final; a refused grant or a restarted supernode is
  // worth another try.
  if (f.fromSupernode && status !== undefined && FINAL_STATUS.has(status) && remoteCode.startsWith('ORIGIN_')) return { fatal: clientError(err) };
  if (f.fromSupernode ? f.tries >= f.pieceAttempts : f.tries >= PEER_FAILURE_CAP) {
    const from = f.fromSupernode ? 'the supernode' : 'peers';
    return { fatal: peerError('DF_PIECE_FAILED', `piece ${f.piece} after ${f.tries} attempts from ${from}: ${describeError(err)}`, err) };
  }
  return 'retry';
}

/** Maps a supernode/origin refusal to an error carrying the origin's status for the client; others pass as they are. */
export function clientError(err: unknown): unknown {
  const status = (err as { status?: number }).status;
  if (status !== undefined && FINAL_STATUS.has(status)) {
    const e = peerError('DF_TASK_FAILED', describeError(err), err);
    Object.assign(e, { status });
    return e;
  }
  return err;
}
