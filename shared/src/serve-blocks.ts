/**
 * Sends a piece block by block, each as soon as it is verified: the bytes from the data file (through the buffer
 * pool), and, framed, the block's 32-byte sha256 after them. Used by the supernode to stream a piece to downloaders
 * while it is still arriving from the origin, and by peers for pieces they are still downloading.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { BLOCK_SIZE, blockCountFor } from './blocks.js';
import { put, serveFileRange, type ServeOptions } from './serve-range.js';

/** A block ready to send: its hash, and its bytes when the caller has them in memory (it just landed). */
export interface BlockReady {
  sha: string;
  /** The block's bytes as they arrived (in order): sent as they are, never read back from disk. */
  data?: readonly Buffer[];
  /**
   * Lets go of `data` (a pooled buffer, see holdBlock): called once the socket has taken all of it. Not called if
   * sending failed: a cut socket may still be reading it, so it is left to the collector rather than reused.
   */
  release?: () => void;
  /**
   * Called instead of `release` when sending failed, for `data` its owner takes back even then (a buffer of a bounded
   * pool, read for this answer alone: lost to the pool, it would shrink the pool for good).
   */
  failed?: () => void;
}

export interface ServeBlocksOptions extends ServeOptions {
  /** Resolves once block `b` is verified and on disk (rejects if it never will be). */
  block(b: number): Promise<BlockReady>;
  /** Append each block's hash after its bytes. */
  framed: boolean;
  /** Offsets inside the piece to send (inclusive; default the whole piece): a Range read sends only what it covers. */
  from?: number;
  to?: number;
  /** Whole piece only: start at this block and wrap around (what a reader needing that block first asked for). */
  firstBlock?: number;
  /**
   * Unframed only: whether block `b` is verified on disk now and `block(b)` would add nothing (no wait, no check the
   * first block's did not already do). Such blocks following one read from disk (after the first block, which goes
   * alone) go out in the same read loop, in reads of the pool's buffer size instead of one read per block.
   */
  onDisk?(b: number): boolean;
  /**
   * Read the first block from disk by itself (default true): someone waits on it (a downloader that must hash it, a
   * client's first byte). False for the later pieces of one answer, whose first block nobody waits on.
   */
  firstAlone?: boolean;
}

export async function serveBlocks(path: string, pieceStart: number, pieceLength: number, out: Writable, o: ServeBlocksOptions): Promise<void> {
  const count = blockCountFor(pieceLength);
  const from = o.from ?? 0;
  const to = o.to ?? pieceLength - 1;
  const order: number[] = [];
  for (let b = Math.floor(from / BLOCK_SIZE); b < count && b * BLOCK_SIZE <= to; b++) order.push(b);
  const k = o.firstBlock ?? 0;
  if (k > 0 && k < order.length && order[0] === 0) order.push(...order.splice(0, k));
  // The caller's handle, or one opened at the first block read from disk and kept for the rest of the piece (not once
  // per block).
  let fh: FileHandle | undefined = o.fh;
  try {
    for (let i = 0; i < order.length; i++) {
      const b = order[i]!;
      const ready = await o.block(b);
      const start = Math.max(from, b * BLOCK_SIZE);
      let end = Math.min(to, (b + 1) * BLOCK_SIZE - 1, pieceLength - 1);
      // Framed, the block's hash goes out in the same turn as its last bytes (see putSlice).
      const trailer = o.framed ? Buffer.from(ready.sha, 'hex') : undefined;
      if (ready.data) {
        try {
          await putSlice(out, ready.data, start - b * BLOCK_SIZE, end - b * BLOCK_SIZE, o, trailer);
        } catch (err) {
          ready.failed?.();
          throw err;
        }
        ready.release?.();
      }
      else {
        // The first block goes out alone (unless `firstAlone` is false), the rest in big reads: whoever waits on it (a
        // downloader that must hash it before its reader gets a byte, a client's first byte) does not wait for a 1 MiB
        // read behind it. A run is one buffer's worth at most, so `block` and `onDisk` are asked again at least that
        // often (a file handed out to a local client meanwhile is hashed block by block from the next run on).
        while (!o.framed && (i > 0 || o.firstAlone === false) && order[i + 1] === order[i]! + 1 && (order[i + 1]! + 1) * BLOCK_SIZE - start <= o.pool.size && o.onDisk?.(order[i + 1]!)) {
          end = Math.min(to, (order[++i]! + 1) * BLOCK_SIZE - 1, pieceLength - 1);
        }
        await serveFileRange(path, pieceStart + start, pieceStart + end, out, { ...o, fh: (fh ??= await open(path, 'r')) }, trailer);
      }
    }
  } finally {
    if (fh !== o.fh) await fh?.close();
  }
}

/**
 * Writes bytes [from, to] (inclusive, offsets in the block) of a block held in memory. All of it goes to the socket
 * at once and only the last write is waited for (writes complete in order, so then the socket has taken every part):
 * one hand-off per block instead of one event-loop round trip per network chunk, which on a busy process added
 * milliseconds to every hop of a Range read's first block. A `trailer` (the block's hash, framed) is that last write:
 * sent behind the bytes in the same turn, since the downloader can use none of them before it has it.
 */
async function putSlice(out: Writable, chunks: readonly Buffer[], from: number, to: number, o: ServeOptions, trailer?: Buffer): Promise<void> {
  const send = (b: Buffer) => {
    if (out.destroyed) throw new Error('the reader went away');
    out.write(b);
    o.onBytes?.(b.length);
  };
  let pos = 0;
  let last: Buffer | undefined;
  for (const c of chunks) {
    const a = Math.max(from, pos);
    const z = Math.min(to + 1, pos + c.length);
    pos += c.length;
    if (z <= a) continue;
    o.signal?.throwIfAborted();
    const paced = o.pace?.(z - a, o.signal);
    if (paced) await paced;
    if (last) send(last);
    last = c.subarray(a - (pos - c.length), z - (pos - c.length));
  }
  if (trailer) {
    if (last) {
      if (out.destroyed) throw new Error('the reader went away');
      out.write(last);
    }
    await put(out, trailer, o.stallMs ?? 10_000);
    if (last) o.onBytes?.(last.length);
  } else if (last) {
    await put(out, last, o.stallMs ?? 10_000);
    o.onBytes?.(last.length);
  }
}
