/**
 * Sends bytes [from, to] of a file to a socket through the buffer pool: read a chunk into a pooled buffer, write it,
 * wait until the socket has taken it, give the buffer back. A reader that takes nothing for `stallMs` is cut (its
 * socket destroyed): a client that stops reading must not hold a buffer, a slot or a file forever.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { errorFactory, type ErrorTable } from './errors.js';
import type { BufferPool } from './buffer-pool.js';

export const ServeErrors = {
  READER_STALLED: { message: 'the reader took nothing for %s', status: 408 },
  SERVE_SHORT: { message: 'data file ended early: %s', status: 500 },
} as const satisfies ErrorTable<string>;

const serveError = errorFactory(ServeErrors);

export interface ServeOptions {
  pool: BufferPool;
  /** Cut a reader that takes nothing for this long. */
  stallMs?: number;
  signal?: AbortSignal;
  /** Called with each chunk's size once the socket took it. */
  onBytes?: (n: number) => void;
  /** A bandwidth limit each chunk waits for before it is sent (see TokenBucket). */
  pace?: (n: number, signal?: AbortSignal) => Promise<void> | undefined;
  /** The file already open (a caller sending many ranges of one file opens it once). */
  fh?: FileHandle;
}

/** Writes `data` and resolves once `out` has taken it (flushed to the kernel or queued under its high-water mark). */
export function put(out: Writable, data: Buffer, stallMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err?: Error | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      out.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onClose = () => finish(new Error('the reader went away'));
    const timer = setTimeout(() => {
      const err = serveError('READER_STALLED', `${stallMs} ms`);
      out.destroy(err);
      finish(err);
    }, stallMs);
    out.once('close', onClose);
    // The callback fires once the chunk is handed to the kernel: only then may the buffer be reused.
    out.write(data, (err) => finish(err));
  });
}

/** Sends bytes [from, to] of the file at `path` (see above), then `trailer` if given. */
export async function serveFileRange(path: string, from: number, to: number, out: Writable, o: ServeOptions, trailer?: Buffer): Promise<void> {
  if (to < from) {
    if (trailer) await put(out, trailer, o.stallMs ?? 10_000);
    return;
  }
  const fh = o.fh ?? (await open(path, 'r'));
  try {
    let pos = from;
    while (pos <= to) {
      o.signal?.throwIfAborted();
      if (out.destroyed) throw new Error('the reader went away');
      // Paced before a pooled buffer is taken: a stream held back by the limit holds no buffer meanwhile.
      const paced = o.pace?.(Math.min(o.pool.size, to - pos + 1), o.signal);
      if (paced) await paced;
      const buf = await o.pool.acquire(o.signal);
      try {
        const want = Math.min(buf.length, to - pos + 1);
        const { bytesRead } = await fh.read(buf, 0, want, pos);
        if (bytesRead === 0) throw serveError('SERVE_SHORT', `${path} at ${pos}`);
        if (trailer && pos + bytesRead > to) {
          // The trailer goes out right behind the range's last bytes, not an event-loop turn later: a reader that can
          // use the bytes only with it (a block's hash) does not wait on whatever else this process does meanwhile.
          // Writes complete in order, so once the trailer is taken the buffer is too.
          out.write(buf.subarray(0, bytesRead));
          await put(out, trailer, o.stallMs ?? 10_000);
        } else await put(out, buf.subarray(0, bytesRead), o.stallMs ?? 10_000);
        o.onBytes?.(bytesRead);
        pos += bytesRead;
      } finally {
        o.pool.release(buf);
      }
    }
  } finally {
    if (!o.fh) await fh.close();
  }
}
