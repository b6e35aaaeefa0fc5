/**
 * Piece I/O on a task's data file: write a piece from a stream at its offset while hashing it, and read a piece back
 * with its hash checked before any byte of it is handed on.
 */
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { errorFactory, type ErrorTable } from './errors.js';
import { discard } from './abort.js';

export const PieceErrors = {
  PIECE_SHORT: { message: 'piece body has the wrong length: %s', status: 502 },
  PIECE_CORRUPT: { message: 'piece failed verification: %s', status: 502 },
  PIECE_DISK_FULL: { message: 'no space left writing piece: %s', status: 507 },
} as const satisfies ErrorTable<string>;

export const pieceError = errorFactory(PieceErrors);

/** Network chunks are small (16-64 KiB): writing each costs a thread-pool round trip, so they go out in ~1 MiB writev()s. */
class WriteBatch {
  readonly #fh: FileHandle;
  #pos: number;
  #bufs: Buffer[] = [];
  #size = 0;
  constructor(fh: FileHandle, pos: number) {
    this.#fh = fh;
    this.#pos = pos;
  }
  async add(chunk: Buffer): Promise<void> {
    this.#bufs.push(chunk);
    this.#size += chunk.length;
    if (this.#size >= 1 << 20) await this.flush();
  }
  async flush(): Promise<void> {
    let bufs = this.#bufs;
    let size = this.#size;
    this.#bufs = [];
    this.#size = 0;
    while (size > 0) {
      const { bytesWritten } = await this.#fh.writev(bufs, this.#pos);
      this.#pos += bytesWritten;
      size -= bytesWritten;
      // A short write (rare) continues with the unwritten rest.
      if (size > 0) bufs = [Buffer.concat(bufs).subarray(bytesWritten)];
    }
  }
}

/**
 * Copies `body` into `fh` at `offset`, hashing as it goes; checks the length, returns the sha256 hex.
 *
 * No fsync: a piece's bytes may still be in the page cache when it is recorded, and that is safe because nothing
 * written before this process started is ever served unchecked (pieces found on disk at start-up are re-hashed before
 * first use), so a power loss can cost a refetch but never a wrong byte. Syncing every piece cost a disk flush per
 * 4–64 MiB on the hot path.
 * If `expectedSha` is given and does not match, throws PIECE_CORRUPT (the caller must not mark the piece present).
 * Memory use is one chunk at a time, whatever the piece size.
 */
export async function writePiece(
  fh: FileHandle,
  offset: number,
  length: number,
  body: Readable,
  opts: { expectedSha?: string; label?: string; signal?: AbortSignal; onBytes?: (n: number) => void } = {},
): Promise<string> {
  const h = createHash('sha256');
  let pos = offset;
  const end = offset + length;
  const label = opts.label ?? `@${offset}`;
  const batch = new WriteBatch(fh, offset);
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      opts.signal?.throwIfAborted();
      if (pos + chunk.length > end) throw pieceError('PIECE_SHORT', `${label}: more than ${length} bytes`);
      opts.onBytes?.(chunk.length);
      h.update(chunk);
      await batch.add(chunk);
      pos += chunk.length;
    }
    await batch.flush();
  } catch (err) {
    discard(body);
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw pieceError('PIECE_DISK_FULL', label, err);
    throw err;
  }
  if (pos !== end) throw pieceError('PIECE_SHORT', `${label}: got ${pos - offset} of ${length} bytes`);
  const sha = h.digest('hex');
  if (opts.expectedSha && sha !== opts.expectedSha) throw pieceError('PIECE_CORRUPT', `${label}: sha256 ${sha} != ${opts.expectedSha}`);
  return sha;
}

/**
 * Checks a stored piece against its sha256 by reading it back in 1 MiB chunks (never the piece in one Buffer). For
 * pieces this process did not write and hash itself (found on disk at start-up): a torn write or a bad disk is found
 * here, before any byte of the piece is served.
 */
export async function verifyStoredPiece(path: string, offset: number, length: number, sha256: string, label = `@${offset}`): Promise<void> {
  const h = createHash('sha256');
  let got = 0;
  if (length > 0) {
    for await (const chunk of createReadStream(path, { start: offset, end: offset + length - 1, highWaterMark: 1 << 20 })) {
      h.update(chunk as Buffer);
      got += (chunk as Buffer).length;
    }
  }
  if (got !== length) throw pieceError('PIECE_SHORT', `${label}: data file has ${got} of ${length} bytes`);
  const actual = h.digest('hex');
  if (actual !== sha256) throw pieceError('PIECE_CORRUPT', `${label}: on-disk sha256 ${actual} != ${sha256}`);
}

/**
 * Writes a whole-object stream (from an origin that ignores Range) into `fh`, cutting it into pieces as bytes arrive:
 * each finished piece is written and handed to `onPiece(n, sha256)` before the next is reported. Pieces for which
 * `skip(n)` is true are read past without being written (already present).
 */
export async function writeWholeStream(
  fh: FileHandle,
  body: Readable,
  opts: { pieceSize: number; length: number; onPiece: (n: number, sha256: string) => Promise<void>; skip?: (n: number) => boolean; onBytes?: (n: number) => void; signal?: AbortSignal },
): Promise<void> {
  const { pieceSize, length } = opts;
  let pos = 0;
  let n = 0;
  let h = createHash('sha256');
  let batch: WriteBatch | undefined;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      opts.signal?.throwIfAborted();
      opts.onBytes?.(chunk.length);
      let off = 0;
      while (off < chunk.length) {
        const pieceEnd = Math.min(length, (n + 1) * pieceSize);
        const take = Math.min(chunk.length - off, pieceEnd - pos);
        if (take <= 0) throw pieceError('PIECE_SHORT', `origin sent more than ${length} bytes`);
        const part = chunk.subarray(off, off + take);
        const skipping = opts.skip?.(n) ?? false;
        if (!skipping) {
          h.update(part);
          batch ??= new WriteBatch(fh, pos);
          await batch.add(part);
        }
        pos += take;
        off += take;
        if (pos === pieceEnd) {
          if (!skipping) {
            await batch!.flush();
            batch = undefined;
            await opts.onPiece(n, h.digest('hex'));
          }
          n++;
          h = createHash('sha256');
        }
      }
    }
  } catch (err) {
    discard(body);
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw pieceError('PIECE_DISK_FULL', `@${pos}`, err);
    throw err;
  }
  if (pos !== length) throw pieceError('PIECE_SHORT', `origin body ended at ${pos} of ${length} bytes`);
}
