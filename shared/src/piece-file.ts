/**
 * Piece I/O on a task's data file, block by block: a piece arriving from a stream is hashed per block (BLOCK_SIZE), each
 * block is checked against the supernode's record (from the assignment, or framed in the supernode's own body) before
 * it is written, and reported verified once it is on disk; a piece read back from disk is checked block by block too.
 */
import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { errorFactory, type ErrorTable } from './errors.js';
import { discard } from './abort.js';
import { BLOCK_HASH_BYTES, BLOCK_SIZE, blockCountFor } from './blocks.js';
import { BufferPool } from './buffer-pool.js';

export const PieceErrors = {
  PIECE_SHORT: { message: 'piece body has the wrong length: %s', status: 502 },
  PIECE_CORRUPT: { message: 'piece failed verification: %s', status: 502 },
  PIECE_DISK_FULL: { message: 'no space left writing piece: %s', status: 507 },
  PIECE_MISSING: { message: 'piece not present: %s', status: 404 },
} as const satisfies ErrorTable<string>;

export const pieceError = errorFactory(PieceErrors);

/**
 * Where a block's network chunks are gathered for its one write. The kernel's buffered-write path costs per segment,
 * not per byte: on this project's test machine 1 GiB written as 64 KiB segments (one `writev` of a block's chunks)
 * took 0.9–1.5 s of CPU, as 256 KiB writes 0.4 s, so a copy into one buffer (about 0.1 ms per MiB) pays for itself
 * several times over. Buffers go back as soon as their write returns; a few exist at once (one per block being
 * written), and none is garbage.
 */
const gather = new BufferPool(BLOCK_SIZE, 64);

/** Writes `bufs` (`size` bytes, at most one block) at `pos` in one contiguous write, continuing after short writes. */
async function writeAll(fh: FileHandle, bufs: Buffer[], size: number, pos: number): Promise<void> {
  if (bufs.length === 1) return writeFully(fh, bufs[0]!.subarray(0, size), pos);
  const buf = await gather.acquire();
  try {
    let at = 0;
    for (const b of bufs) at += b.copy(buf, at);
    await writeFully(fh, buf.subarray(0, size), pos);
  } finally {
    gather.release(buf);
  }
}

/** The last write queued on each open data file. */
const writing = new WeakMap<FileHandle, Promise<void>>();

/**
 * Writes to one file go one at a time. The kernel serialises buffered writes to a file anyway (ext4 and XFS take the
 * inode's lock exclusively), and thread-pool threads queued on it spin before they sleep: with eight pieces of a task
 * landing at once, `perf` put 7 % of a receiving dfdaemon's CPU in `rwsem_spin_on_owner`, and queueing the writes
 * here took its CPU per GB from 6.0–6.7 s to 5.3–5.7 s at the same throughput (bench/serve.mjs, second node).
 */
export function writeFully(fh: FileHandle, buf: Buffer, pos: number): Promise<void> {
  const done = (writing.get(fh) ?? Promise.resolve()).then(() => writeNow(fh, buf, pos));
  writing.set(fh, done.catch(() => {}));
  return done;
}

async function writeNow(fh: FileHandle, buf: Buffer, pos: number): Promise<void> {
  for (let off = 0; off < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos + off);
    off += bytesWritten;
  }
}

export interface PieceSinkOptions {
  /** Block hashes the bytes must match (the supernode's record); a hole means "not known, record what arrives". */
  expected?: readonly (string | undefined)[];
  /** Each block's bytes are followed by its 32-byte sha256 (the supernode's framed body), which they must match. */
  framed?: boolean;
  /** Blocks already verified on disk by an earlier attempt: checked again, never rewritten (readers may be on them). */
  have?: (b: number) => boolean;
  /**
   * Block `b` matched and is on disk. `data` are its bytes (views of the network chunks, valid during the call): the
   * supernode feeds its whole-blob digest from them instead of reading the block back.
   */
  onBlock?: (b: number, sha: string, data: readonly Buffer[]) => void;
  /**
   * Block `b` matched, before it is written: its bytes may go to readers waiting for it right now (they are verified;
   * only readers that would read it from disk must wait for `onBlock`).
   */
  onHashed?: (b: number, sha: string, data: readonly Buffer[]) => void;
  label?: string;
  /** The body holds blocks [blockBase, blockEnd) of the piece only (default: all of them). */
  blockBase?: number;
  blockEnd?: number;
}

/**
 * One piece being written: takes the piece's bytes (and, framed, its block hashes) in whatever chunks the network
 * gives, hashes each block, refuses a block whose hash is not the expected one before writing any byte of it, writes
 * the block in one `writev` (network chunks are 16–64 KiB; a write per chunk would cost a thread-pool round trip
 * each), then reports it. Memory is at most one block of chunk views.
 */
export class PieceSink {
  readonly #fh: FileHandle;
  readonly #offset: number;
  readonly #length: number;
  readonly #o: PieceSinkOptions;
  readonly #base: number;
  readonly #end: number;
  /** Hashes of the blocks taken so far, from `blockBase` on. */
  readonly blocks: string[] = [];
  #inBlock = 0;
  #hash: Hash = createHash('sha256');
  #bufs: Buffer[] = [];
  /** Framed: the hash of the current block is being read. */
  #theirs?: Buffer;
  #theirsGot = 0;

  constructor(fh: FileHandle, offset: number, length: number, o: PieceSinkOptions = {}) {
    this.#fh = fh;
    this.#offset = offset;
    this.#length = length;
    this.#o = o;
    this.#base = o.blockBase ?? 0;
    this.#end = o.blockEnd ?? blockCountFor(length);
  }

  get done(): boolean {
    return this.blocks.length === this.#end - this.#base;
  }

  /** Bytes of piece data taken so far. */
  get received(): number {
    return this.blocks.length * BLOCK_SIZE + this.#inBlock;
  }

  /** Bytes this sink takes in all (its blocks, without framing). */
  get expectedBytes(): number {
    return Math.min(this.#length, this.#end * BLOCK_SIZE) - this.#base * BLOCK_SIZE;
  }

  #blockLen(b: number): number {
    return Math.min(BLOCK_SIZE, this.#length - b * BLOCK_SIZE);
  }

  /** Consumes what of `chunk` belongs to this piece; returns how many bytes that was (less only once done). */
  async feed(chunk: Buffer): Promise<number> {
    let off = 0;
    while (off < chunk.length && !this.done) {
      const b = this.#base + this.blocks.length;
      if (this.#theirs) {
        const take = Math.min(BLOCK_HASH_BYTES - this.#theirsGot, chunk.length - off);
        chunk.copy(this.#theirs, this.#theirsGot, off, off + take);
        this.#theirsGot += take;
        off += take;
        if (this.#theirsGot === BLOCK_HASH_BYTES) await this.#complete(b, this.#theirs.toString('hex'));
        continue;
      }
      const take = Math.min(this.#blockLen(b) - this.#inBlock, chunk.length - off);
      const part = chunk.subarray(off, off + take);
      this.#hash.update(part);
      this.#bufs.push(part);
      this.#inBlock += take;
      off += take;
      if (this.#inBlock === this.#blockLen(b)) {
        if (this.#o.framed) {
          this.#theirs = Buffer.allocUnsafe(BLOCK_HASH_BYTES);
          this.#theirsGot = 0;
        } else await this.#complete(b, undefined);
      }
    }
    return off;
  }

  async #complete(b: number, framedSha: string | undefined): Promise<void> {
    const sha = this.#hash.digest('hex');
    const label = this.#o.label ?? `@${this.#offset}`;
    const want = this.#o.expected?.[b];
    if (framedSha !== undefined && sha !== framedSha) throw pieceError('PIECE_CORRUPT', `${label} block ${b}: sha256 ${sha} != ${framedSha} (framed)`);
    if (want !== undefined && sha !== want) {
      // Against a block already on disk: the stored copy and the source disagree, so the stored copy is suspect too.
      const e = pieceError('PIECE_CORRUPT', `${label} block ${b}: sha256 ${sha} != ${want}${this.#o.have?.(b) ? ' (stored)' : ''}`);
      if (this.#o.have?.(b)) Object.assign(e, { storedBlock: b });
      throw e;
    }
    const bufs = this.#bufs;
    const size = this.#inBlock;
    if (!this.#o.have?.(b)) this.#o.onHashed?.(b, sha, bufs);
    if (!this.#o.have?.(b)) await writeAll(this.#fh, bufs, size, this.#offset + b * BLOCK_SIZE);
    this.blocks.push(sha);
    this.#bufs = [];
    this.#inBlock = 0;
    this.#theirs = undefined;
    this.#hash = createHash('sha256');
    // Reported only when its bytes are in the file: a reader told "verified" finds them there.
    if (!this.#o.have?.(b)) this.#o.onBlock?.(b, sha, bufs);
  }
}

/** Waits until `n` more bytes may pass a bandwidth limit (undefined when they may at once); see TokenBucket. */
export type Pace = (n: number, signal?: AbortSignal) => Promise<void> | undefined;

export interface WritePieceOptions extends PieceSinkOptions {
  signal?: AbortSignal;
  onBytes?: (n: number) => void;
  /** A bandwidth limit: each chunk waits for it before it is taken, so the source slows down (TCP flow control). */
  pace?: Pace;
  /**
   * The body starts at this block and wraps around: blocks [firstBlock, end) then [0, firstBlock), as a supernode
   * sends a piece to a reader who needs a block in the middle of it first. Not with blockBase/blockEnd.
   */
  firstBlock?: number;
}

/**
 * Copies `body` into `fh` block by block (see PieceSink) for the piece at `offset` of `length` bytes; checks the
 * length and returns the hashes of the blocks the body held (all of them, in piece order, unless `blockBase` /
 * `blockEnd` narrow it). A block that does not match its expected hash throws PIECE_CORRUPT before any byte of it is
 * written or reported.
 *
 * No fsync: a block's bytes may still be in the page cache when it is reported, and that is safe because nothing
 * written before this process started is ever served unchecked (pieces found on disk at start-up are re-hashed before
 * first use, and blocks of unfinished pieces are not recorded at all), so a power loss can cost a refetch but never a
 * wrong byte. Syncing every piece cost a disk flush per 4–64 MiB on the hot path.
 */
export async function writePiece(fh: FileHandle, offset: number, length: number, body: Readable, opts: WritePieceOptions = {}): Promise<string[]> {
  const label = opts.label ?? `@${offset}`;
  const count = blockCountFor(length);
  const first = opts.firstBlock ?? 0;
  if (!Number.isInteger(first) || first < 0 || (count > 0 && first >= count)) throw pieceError('PIECE_SHORT', `${label}: no block ${first}`);
  const sinks =
    first > 0
      ? [new PieceSink(fh, offset, length, { ...opts, label, blockBase: first, blockEnd: count }), new PieceSink(fh, offset, length, { ...opts, label, blockBase: 0, blockEnd: first })]
      : [new PieceSink(fh, offset, length, { ...opts, label })];
  let i = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      opts.signal?.throwIfAborted();
      const paced = opts.pace?.(chunk.length, opts.signal);
      if (paced) await paced;
      opts.onBytes?.(chunk.length);
      let off = 0;
      while (off < chunk.length) {
        const sink = sinks[i];
        if (!sink) throw pieceError('PIECE_SHORT', `${label}: more than ${length} bytes`);
        off += await sink.feed(off === 0 ? chunk : chunk.subarray(off));
        if (sink.done) i++;
      }
    }
  } catch (err) {
    discard(body);
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw pieceError('PIECE_DISK_FULL', label, err);
    throw err;
  }
  if (!sinks.every((s) => s.done)) {
    throw pieceError('PIECE_SHORT', `${label}: got ${sinks.reduce((a, s) => a + s.received, 0)} of ${sinks.reduce((a, s) => a + s.expectedBytes, 0)} bytes`);
  }
  return first > 0 ? [...sinks[1]!.blocks, ...sinks[0]!.blocks] : sinks[0]!.blocks;
}

/**
 * Checks a stored piece against its block hashes by reading it back one block at a time (never the piece in one
 * Buffer). For pieces this process did not write and hash itself (found on disk at start-up): a torn write or a bad
 * disk is found here, before any byte of the piece is served.
 */
export async function verifyStoredPiece(path: string, offset: number, length: number, blocks: readonly string[], label = `@${offset}`): Promise<void> {
  let b = 0;
  let inBlock = 0;
  let h = createHash('sha256');
  let got = 0;
  const blockLen = (i: number) => Math.min(BLOCK_SIZE, length - i * BLOCK_SIZE);
  if (length > 0) {
    for await (const chunk of createReadStream(path, { start: offset, end: offset + length - 1, highWaterMark: BLOCK_SIZE })) {
      const c = chunk as Buffer;
      got += c.length;
      let off = 0;
      while (off < c.length) {
        const take = Math.min(blockLen(b) - inBlock, c.length - off);
        h.update(c.subarray(off, off + take));
        inBlock += take;
        off += take;
        if (inBlock === blockLen(b)) {
          const actual = h.digest('hex');
          if (actual !== blocks[b]) throw pieceError('PIECE_CORRUPT', `${label} block ${b}: on-disk sha256 ${actual} != ${blocks[b]}`);
          b++;
          inBlock = 0;
          h = createHash('sha256');
        }
      }
    }
  }
  if (got !== length) throw pieceError('PIECE_SHORT', `${label}: data file has ${got} of ${length} bytes`);
}

/**
 * Writes a whole-object stream (from an origin that ignores Range) into `fh`, cutting it into pieces and blocks as
 * bytes arrive: each finished piece is handed to `onPiece(n, blocks)` before the next is reported, each block to
 * `onBlock` as it lands. Pieces for which `skip(n)` is true are read past without being written (already present).
 */
export async function writeWholeStream(
  fh: FileHandle,
  body: Readable,
  opts: {
    pieceSize: number;
    length: number;
    onPiece: (n: number, blocks: string[]) => Promise<void>;
    onBlock?: (n: number, b: number, sha: string, data: readonly Buffer[]) => void;
    skip?: (n: number) => boolean;
    onBytes?: (n: number) => void;
    pace?: Pace;
    signal?: AbortSignal;
  },
): Promise<void> {
  const { pieceSize, length } = opts;
  let pos = 0;
  let n = 0;
  let sink: PieceSink | undefined;
  let skipping = false;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      opts.signal?.throwIfAborted();
      const paced = opts.pace?.(chunk.length, opts.signal);
      if (paced) await paced;
      opts.onBytes?.(chunk.length);
      let off = 0;
      while (off < chunk.length) {
        const pieceEnd = Math.min(length, (n + 1) * pieceSize);
        if (pos >= length) throw pieceError('PIECE_SHORT', `origin sent more than ${length} bytes`);
        // Decided once, at the piece's first byte: a piece recorded by someone else meanwhile is finished here anyway.
        if (pos === n * pieceSize) skipping = opts.skip?.(n) ?? false;
        if (skipping) {
          const take = Math.min(chunk.length - off, pieceEnd - pos);
          pos += take;
          off += take;
        } else {
          const piece = n;
          sink ??= new PieceSink(fh, n * pieceSize, pieceEnd - n * pieceSize, { label: `@${n * pieceSize}`, onBlock: (b, sha, data) => opts.onBlock?.(piece, b, sha, data) });
          const took = await sink.feed(chunk.subarray(off));
          pos += took;
          off += took;
        }
        if (pos === pieceEnd) {
          if (sink) await opts.onPiece(n, sink.blocks);
          sink = undefined;
          n++;
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
