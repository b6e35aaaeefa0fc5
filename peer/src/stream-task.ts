/**
 * Writes bytes [start, end] of a task to `out` in order, block by block as each is verified (a piece still arriving
 * is streamed as its blocks land), read from disk through the process's buffer pool. A piece this process did not
 * hash itself is re-checked against its block hashes before its first byte is written. When the whole blob is being
 * sent, its last block is held back until the blob matched its digest, so a client never receives a complete-looking
 * wrong body.
 */
import type { FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { BLOCK_SIZE, blockCountFor, serveBlocks, type BufferPool, type HeldBlock } from '@damselfly/shared';
import type { Download } from './peer.js';
import { peerError } from './errors.js';

export interface StreamOptions {
  /** Buffers chunks are read into (shared by every reader of this process). */
  pool: BufferPool;
  /** Inclusive byte range. */
  start: number;
  end: number;
  signal?: AbortSignal;
  onBytes?: (n: number) => void;
  /** The bytes of the range's first block, if the caller already has them in memory (it just landed). */
  head?: HeldBlock;
}

export async function streamTask(dl: Download, out: Writable, opts: StreamOptions): Promise<void> {
  if (dl.task.info.contentLength === 0 || opts.end < opts.start) {
    await dl.done;
    return;
  }
  // A task being read is in use: GC leaves it alone; once read, it counts as recently used (marked after the bytes
  // went out, not before the first one).
  const lease = dl.task.lease();
  try {
    await dl.task.withFile((fh) => writeRange(dl, out, fh, opts));
  } finally {
    lease();
    dl.task.touch();
  }
}

async function writeRange(dl: Download, out: Writable, fh: FileHandle, { start, end, signal, onBytes, pool, head }: StreamOptions): Promise<void> {
  const { task } = dl;
  const { pieceSize, contentLength } = task.info;
  if (task.meta.handedOut && task.complete) {
    // A file a local client holds too: every block hashed as it is read, in big reads (see LocalTask). Complete, so
    // no download is behind this answer and no block of it is held for the digest.
    head?.release?.();
    return task.serveHandedOut(fh, start, end, out, { pool, signal, onBytes });
  }
  const whole = start === 0 && end === contentLength - 1;
  const first = Math.floor(start / pieceSize);
  const last = Math.floor(end / pieceSize);
  for (let n = first; n <= last; n++) {
    const base = n * pieceSize;
    const { length } = task.range(n);
    const lastBlock = blockCountFor(length) - 1;
    // The blob's last block, held back until the whole blob matched its digest.
    const held = (b: number) => whole && n === last && b === lastBlock;
    // The answer's last block is never read in one go with the blocks before it: it is waited for on its own, which
    // checks the stamp of a file handed out to a local client meanwhile (see LocalTask) before the answer completes.
    const final = n === last ? Math.floor((end - base) / BLOCK_SIZE) : -1;
    // Only the requested part of the piece is read, through the pooled buffers, as fast as the client takes it.
    await serveBlocks(task.dataPath, base, length, out, {
      framed: false,
      from: Math.max(start, base) - base,
      to: Math.min(end, base + length - 1) - base,
      pool,
      fh,
      signal,
      onBytes,
      // A present piece is verified as a whole by its first block's wait: the rest is read in big reads, except the
      // blob's last block while the digest check holds it, and every block of a file a local client holds too (each
      // is hashed as it is read, see LocalTask.readHandedOut).
      onDisk: (b) => task.has(n) && !held(b) && b !== final && !task.meta.handedOut,
      // Only the answer's first block is waited on by the client; later pieces go in big reads from their start.
      firstAlone: n === first,
      block: async (b) => {
        if (head) {
          const got = head;
          head = undefined;
          return { sha: '', ...got };
        }
        // A piece not here and not coming (another reader found it bad on disk and dropped it) is asked of the
        // download; a download that has ended will not fetch it, and waiting would hang this reader for good.
        if (!task.has(n) && !task.writing(n) && !dl.want([n])) throw peerError('DF_PIECE_FAILED', `piece ${n} of ${task.info.taskId} is gone (dropped from the cache) and its download has ended: ask again`);
        const got = await task.waitBlock(n, b, { signal });
        if (held(b)) {
          await dl.done;
          // Once more before the block that completes the answer: a file a local client holds too (see
          // LocalTask.handOut) may have changed while the rest went out, and then this answer must end cut.
          await task.ensureVerified(n);
        }
        if (!got && task.meta.handedOut) return task.readHandedOut(n, b, { pool, signal });
        return { sha: '', ...got };
      },
    });
  }
}

