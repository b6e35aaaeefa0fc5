/**
 * Reads a byte range of a file back through one buffer taken from a pool, for checks that hash what is on disk (a
 * stored piece at start-up, the digest's read-back of blocks seeded ahead of the in-order prefix): a few reused
 * buffers however much is read, never a fresh one per read as a read stream has.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { BufferPool } from './buffer-pool.js';

/**
 * Hands `fn` bytes [start, start + length) of `path` in chunks of the pool's buffer size (the last one shorter), each
 * filled completely, so a pool of block-sized buffers gives exactly the blocks of a piece that starts at `start`. The
 * chunk is valid during the call only. Stops at the end of the file (the bytes of a chunk it cut short are not handed
 * on) and returns how many bytes the file had in the range: less than `length` means it is short.
 */
export async function readFileChunks(path: string, start: number, length: number, pool: BufferPool, fn: (chunk: Buffer) => void, signal?: AbortSignal): Promise<number> {
  if (length <= 0) return 0;
  const buf = await pool.acquire(signal);
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, 'r');
    for (let done = 0; done < length; ) {
      const want = Math.min(buf.length, length - done);
      const got = await readFull(fh, buf, want, start + done, signal);
      if (got < want) return done + got;
      fn(buf.subarray(0, want));
      done += want;
    }
    return length;
  } finally {
    await fh?.close();
    pool.release(buf);
  }
}

/**
 * Fills `buf[0, length)` from `fh` at `offset`, however many reads it takes, as far as the file goes: returns how many
 * bytes it had there (less than `length` means the file is short).
 */
export async function readFull(fh: FileHandle, buf: Buffer, length: number, offset: number, signal?: AbortSignal): Promise<number> {
  let got = 0;
  while (got < length) {
    signal?.throwIfAborted();
    const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}
