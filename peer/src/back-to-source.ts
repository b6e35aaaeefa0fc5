/**
 * Direct origin download of the pieces a task still lacks: used when no supernode answers, or when the supernode
 * dies mid-download. Range-capable origins get parallel per-piece Range GETs; others one sequential read.
 */
import { open } from 'node:fs/promises';
import type { Dispatcher } from 'undici';
import { TransferGuard, discard, fetchOrigin, originError, probeOrigin, redactUrl, wholeObjectGuard, writeWholeStream, type Pace, type ProbeResult } from '@damselfly/shared';
import type { LocalTask } from './local-task.js';

export interface BackSourceRequest {
  url: string;
  headers: Record<string, string>;
  dispatcher: Dispatcher;
  parallel: number;
  /** Pieces to fetch (default: every missing one). */
  pieces?: readonly number[];
  signal: AbortSignal;
  onBytes: (n: number) => void;
  /** The node's download and back-to-source limits. */
  pace?: Pace;
  /** Each block as it lands, with its bytes (for the incremental digest check). */
  onBlock?: (n: number, b: number, sha: string, data: readonly Buffer[]) => void;
}

/** An origin transfer slower than this (after 10 s), or a piece not done in 5 minutes, is cut and counts as failed. */
const ORIGIN_GUARD = { minBytesPerSecond: 64 * 1024, graceMs: 10_000, deadlineMs: 300_000 };

export async function backToSource(task: LocalTask, req: BackSourceRequest, probe?: ProbeResult): Promise<void> {
  const p = probe ?? (await probeOrigin({ url: req.url, headers: req.headers, dispatcher: req.dispatcher, signal: req.signal }));
  // The task's pieces are of the version it was made for: a probe that finds another one ends the run here, before a
  // piece of it is fetched (an origin that stopped sending ETags may not honour If-Range either).
  if (!task.info.digest && task.info.validator !== undefined && p.validator !== task.info.validator) {
    throw originError('ORIGIN_CHANGED', `${redactUrl(req.url)}: ${p.validator ?? 'no ETag'} now, not ${task.info.validator}`);
  }
  // Without a digest, the version's validator goes with every range: pieces of a later version are refused
  // (ORIGIN_CHANGED) rather than stitched to these. With one, the digest says it, and replicas that disagree on their
  // ETags cannot fail a pull that would have matched.
  const validator = task.info.digest ? undefined : p.validator;
  const origin = { url: req.url, headers: req.headers, dispatcher: req.dispatcher, signal: req.signal, total: task.info.contentLength, ...(validator ? { validator } : {}) };
  const missing = (req.pieces ?? task.missing()).filter((n) => !task.has(n));
  if (missing.length === 0) return;
  if (!p.acceptsRanges) {
    // Without Range the only way to any piece is the whole object: take all of it while reading, at the rate a piece
    // must keep and within a piece's deadline per piece (an origin dripping it would otherwise hold the run for good).
    const guard = wholeObjectGuard({ signal: req.signal, ...ORIGIN_GUARD, ...(req.pace ? { minBytesPerSecond: 0 } : {}) }, task.info.pieceCount);
    const body = await fetchOrigin({ ...origin, signal: guard.signal }, 0, task.info.contentLength - 1, true).catch((err: unknown) => {
      guard.done();
      throw err;
    });
    guard.startRate();
    const fh = await open(task.dataPath, 'r+').catch((err: unknown) => {
      discard(body);
      guard.done();
      throw err;
    });
    try {
      await writeWholeStream(fh, body, {
        pieceSize: task.info.pieceSize,
        length: task.info.contentLength,
        skip: (n) => task.has(n),
        onPiece: async (n, blocks) => void (await task.recordPiece(n, blocks)),
        onBlock: (n, b, sha, data) => {
          req.onBlock?.(n, b, sha, data);
          task.landed(n, b, sha, data);
        },
        onBytes: (n) => {
          guard.onBytes(n);
          req.onBytes(n);
        },
        pace: req.pace,
        signal: guard.signal,
      });
    } finally {
      guard.done();
      await fh.close();
    }
    return;
  }
  let next = 0;
  // The first piece that fails ends the call: the other workers stop too (their transfers are cut, no new piece
  // starts), and the call returns only once they have, so nothing writes into the task after its run let it go.
  const stop = new AbortController();
  const signal = AbortSignal.any([req.signal, stop.signal]);
  let failure: { err: unknown } | undefined;
  const worker = async () => {
    while (next < missing.length && !signal.aborted) {
      const n = missing[next++]!;
      if (task.has(n)) continue;
      const { start, end } = task.range(n);
      // A limited node holds its origin reads back itself: their rate says nothing about the origin then.
      const guard = new TransferGuard({ signal, ...ORIGIN_GUARD, ...(req.pace ? { minBytesPerSecond: 0 } : {}) });
      try {
        const body = await fetchOrigin({ ...origin, signal: guard.signal }, start, end);
        guard.startRate();
        await task.writePiece(n, body, {
          signal: guard.signal,
          pace: req.pace,
          onBlock: (b, sha, data) => req.onBlock?.(n, b, sha, data),
          onBytes: (b) => {
            guard.onBytes(b);
            req.onBytes(b);
          },
        });
      } finally {
        guard.done();
      }
    }
  };
  const workers = Array.from({ length: Math.min(req.parallel, missing.length) }, () =>
    worker().catch((err: unknown) => {
      failure ??= { err };
      stop.abort(err);
    }),
  );
  await Promise.all(workers);
  if (failure) throw failure.err;
  // Cancelled before every piece was fetched (the workers stopped at the abort, none of them failing): not a return as
  // if done. Its caller, asked for the same pieces again, called again at once, with no await that waits: a dfget
  // stopped mid-download spun there in promise jobs until its heap ran out.
  req.signal.throwIfAborted();
}
