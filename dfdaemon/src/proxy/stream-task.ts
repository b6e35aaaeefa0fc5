/**
 * Writes bytes [start, end] of a task to `out` in order, piece by piece as each is verified. Every piece is re-read
 * and re-checked against its sha256 before its first byte is written. When the whole blob is being sent, its last
 * piece is held back until the blob matched its digest, so a client never receives a complete-looking wrong body.
 */
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import type { Download } from '../peer/peer.js';

export async function streamTask(
  dl: Download,
  out: Writable,
  { start, end, signal, onBytes }: { start: number; end: number; signal?: AbortSignal; onBytes?: (n: number) => void },
): Promise<void> {
  const { task } = dl;
  const { pieceSize, contentLength } = task.info;
  if (contentLength === 0 || end < start) {
    await dl.done;
    return;
  }
  // A task being read is in use: GC leaves it alone, and it counts as recently used.
  task.users++;
  try {
    await task.touch();
    await writeRange(dl, out, { start, end, signal, onBytes });
  } finally {
    task.users--;
  }
}

async function writeRange(
  dl: Download,
  out: Writable,
  { start, end, signal, onBytes }: { start: number; end: number; signal?: AbortSignal; onBytes?: (n: number) => void },
): Promise<void> {
  const { task } = dl;
  const { pieceSize, contentLength } = task.info;
  const whole = start === 0 && end === contentLength - 1;
  const first = Math.floor(start / pieceSize);
  const last = Math.floor(end / pieceSize);
  for (let n = first; n <= last; n++) {
    await task.waitPiece(n, { signal });
    if (whole && n === last) await dl.done;
    const buf = await task.readPiece(n);
    const base = n * pieceSize;
    const from = Math.max(start, base) - base;
    const to = Math.min(end, base + buf.length - 1) - base + 1;
    const chunk = from === 0 && to === buf.length ? buf : buf.subarray(from, to);
    signal?.throwIfAborted();
    if (out.destroyed) throw new Error('client went away');
    onBytes?.(chunk.length);
    if (!out.write(chunk)) await once(out, 'drain', { signal });
  }
}
