/**
 * Fetches one assigned piece over HTTP from a peer or the supernode into the local task, verifying it. The URL is
 * built here from the source's `scheme://host:port` and the fixed piece path: whatever a peer advertised, nothing
 * else of it is ever requested.
 */
import { BLOCK_SIZE, BLOCK_SIZE_HEADER, FIRST_BLOCK_HEADER, FRAMED_CONTENT_TYPE, GRANT_HEADER, TransferGuard, blockCountFor, peerPiecePath, type BulkBody, type BulkClient, supernodePiecePath, uploadBase, type Assignment, type Pace } from '@damselfly/shared';
import type { LocalTask } from './local-task.js';
import { peerError } from './errors.js';

export function pieceUrl(taskId: string, a: Assignment, firstBlock = 0): string {
  const base = uploadBase(a.base);
  if (!base) throw peerError('DF_PIECE_FAILED', `assignment for piece ${a.piece} names no usable source address`);
  const path = a.from === 'supernode' ? supernodePiecePath(taskId, a.piece) : peerPiecePath(taskId, a.piece);
  return base + path + (firstBlock > 0 ? `?from=${firstBlock}` : '');
}

/**
 * A peer that has not answered with headers by then is silent: route around it. The supernode may be seeding the
 * piece from the origin before it answers, so it gets the whole piece deadline.
 */
const PEER_HEADERS_MS = 5_000;

export interface FetchPieceOptions {
  /** Connections to cluster members (pieces are read into its per-connection buffers, not fresh ones per read). */
  client: BulkClient;
  /** Whole-piece deadline. */
  timeoutMs: number;
  /** Slowest acceptable source, averaged since the start after a short grace (0 = any). */
  minBytesPerSecond: number;
  signal: AbortSignal;
  /** A reader needs this block of the piece first: the supernode is asked to start there. */
  firstBlock?: number;
  /** What this source delivers to this node in all, bytes/s: a fairly shared source is not a slow one. */
  sourceRate?: () => number;
  /** Counts the bytes as they arrive (into the node's per-source meters). */
  onBytes?: (n: number) => void;
  /** The node's download limit. */
  pace?: Pace;
}

export async function fetchPiece(task: LocalTask, a: Assignment, opts: FetchPieceOptions): Promise<number> {
  const guard = new TransferGuard({ signal: opts.signal, deadlineMs: opts.timeoutMs, minBytesPerSecond: opts.minBytesPerSecond, sourceRate: opts.sourceRate });
  // From now on the piece counts as arriving here: other peers may be sent to relay it.
  const end = task.beginFetch(a.piece);
  try {
    return await fetchGuarded(task, a, opts, guard);
  } finally {
    end();
    guard.done();
  }
}

async function fetchGuarded(task: LocalTask, a: Assignment, opts: FetchPieceOptions, guard: TransferGuard): Promise<number> {
  const signal = guard.signal;
  const count = opts.onBytes;
  const onBytes = count ? (n: number) => (guard.onBytes(n), count(n)) : guard.onBytes;
  // An object without a digest is held to its version at the supernode too: a record it made again for another one
  // answers ORIGIN_CHANGED rather than a piece whose framed hashes would pass here.
  const version = a.from === 'supernode' && !task.info.digest ? task.info.validator : undefined;
  const res = await opts.client.get(pieceUrl(task.info.taskId, a, opts.firstBlock), {
    signal,
    headers: { ...(a.grant ? { [GRANT_HEADER]: a.grant } : {}), ...(version ? { 'if-match': version } : {}) },
    headersTimeoutMs: a.from === 'supernode' ? opts.timeoutMs : Math.min(PEER_HEADERS_MS, opts.timeoutMs),
    bodyTimeoutMs: opts.timeoutMs,
  });
  guard.startRate();
  if (res.statusCode !== 200) {
    const text = (await res.body.text(300).catch(() => '')).slice(0, 300);
    let remoteCode: string | undefined;
    try {
      const code = (JSON.parse(text) as { code?: unknown }).code;
      if (typeof code === 'string') remoteCode = code;
    } catch {}
    const e = peerError('DF_PIECE_FAILED', `${a.from} answered ${res.statusCode} for piece ${a.piece}: ${text}`);
    Object.assign(e, { status: res.statusCode, remoteCode, upstream: text });
    throw e;
  }
  const { length } = task.range(a.piece);
  // Where the body starts (it wraps around to block 0): what was asked for, or 0 from a source that ignored it.
  const first = Number(res.headers[FIRST_BLOCK_HEADER] ?? 0);
  if (!Number.isInteger(first) || first < 0 || first >= Math.max(1, blockCountFor(length))) {
    res.body.discard();
    throw peerError('DF_PIECE_FAILED', `${a.from} answered piece ${a.piece} starting at block ${String(res.headers[FIRST_BLOCK_HEADER])}`);
  }
  if (a.from === 'supernode') {
    // The supernode's body carries its own hash after every block (it may still be seeding the piece).
    if (res.headers['content-type'] !== FRAMED_CONTENT_TYPE || res.headers[BLOCK_SIZE_HEADER] !== String(BLOCK_SIZE)) {
      res.body.discard();
      throw peerError('DF_PIECE_FAILED', `the supernode answered piece ${a.piece} in an unexpected format (${String(res.headers['content-type'])})`);
    }
    // A body the write never got to read (the data file would not open) is given up, not left holding its connection.
    await task.writePiece(a.piece, res.body, { framed: true, firstBlock: first, signal, onBytes, pace: opts.pace }).catch(giveUp(res.body));
    return length;
  }
  // A peer's bytes are checked against the supernode's hashes only: a peer's own claims are never used.
  if (!a.blocks || a.blocks.length !== blockCountFor(length)) {
    res.body.discard();
    throw peerError('DF_PIECE_FAILED', `no trusted block hashes for piece ${a.piece} from ${a.from}`);
  }
  await task.writePiece(a.piece, res.body, { expected: a.blocks, firstBlock: first, signal, onBytes, pace: opts.pace }).catch(giveUp(res.body));
  return length;
}

/** Rethrows after giving the body up (a no-op for a body that was read to its end or already failed). */
function giveUp(body: BulkBody): (err: unknown) => never {
  return (err) => {
    body.discard();
    throw err;
  };
}
