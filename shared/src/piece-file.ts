/**
 * Piece I/O on a task's data file, block by block: a piece arriving from a stream is hashed per block (BLOCK_SIZE), each
 * block is checked against the supernode's record (from the assignment, or framed in the supernode's own body) before
 * it is written, and reported verified once it is on disk; a piece read back from disk is checked block by block too.
 */
import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { errorFactory, type ErrorTable } from './errors.js';
import { discard } from './abort.js';
import { BLOCK_HASH_BYTES, BLOCK_SIZE, blockCountFor } from './blocks.js';
import { BufferPool } from './buffer-pool.js';
import { readFileChunks, readFull } from './file-chunks.js';
import { isDiskFull } from './disk-full.js';
import type { BlockReady } from './serve-blocks.js';
import { put } from './serve-range.js';

export const PieceErrors = {
  PIECE_SHORT: { message: 'piece body has the wrong length: %s', status: 502 },
  PIECE_CORRUPT: { message: 'piece failed verification: %s', status: 502 },
  PIECE_DISK_FULL: { message: 'no space left writing piece: %s', status: 507 },
  PIECE_MISSING: { message: 'piece not present: %s', status: 404 },
} as const satisfies ErrorTable<string>;

export const pieceError = errorFactory(PieceErrors);

/**
 * Where each block is gathered as it arrives, for its hash and its one write. The kernel's buffered-write path costs
 * per segment, not per byte: on this project's test machine 1 GiB written as 64 KiB segments took 0.9–1.5 s of CPU,
 * as 256 KiB writes 0.4 s, so a copy into one buffer (about 0.1 ms per MiB) pays for itself several times over; and
 * a block that owns its bytes lets the network buffer they came in be reused at once (see BulkClient). Buffers go
 * back as soon as their block is written and reported; a few exist at once, and none is garbage.
 */
const gather = new BufferPool(BLOCK_SIZE, 64);

/** Blocks a sink may have hashed and not yet written before it stops taking bytes: the disk's backpressure. */
const WRITES_AHEAD = 2;

/**
 * Block bytes handed to `onHashed` / `onBlock` are a pooled buffer, valid during the call. A reader that sends them
 * on later (the bytes of a block it was waiting for) takes a hold with `holdBlock` and lets go once its socket has
 * taken them; the buffer goes back to the pool when its last holder lets go. A holder that fails (its reader cut)
 * never lets go: that buffer is left to the collector instead of being reused under a write that may still read it.
 */
const holders = new WeakMap<readonly Buffer[], { buf: Buffer; count: number }>();

/** The bytes of a block in memory, held until `release` (which may be called more than once). */
export interface HeldBlock {
  data: readonly Buffer[];
  release(): void;
}

/** Holds bytes handed out by a PieceSink beyond the call that handed them out (anything else needs no hold). */
export function holdBlock(data: readonly Buffer[]): HeldBlock {
  const h = holders.get(data);
  if (!h) return { data, release: () => {} };
  h.count++;
  let held = true;
  return {
    data,
    release: () => {
      if (!held) return;
      held = false;
      if (--h.count === 0) gather.release(h.buf);
    },
  };
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
 * One piece being written: takes the piece's bytes (and, framed, its block hashes) in whatever runs the network
 * gives, copying them into a pooled block buffer and into the block's hash as they land; once a block is whole it
 * finishes its hash, refuses a block whose hash is
 * not the expected one before writing any byte of it, writes the block in one write, then reports it. Taking bytes is
 * synchronous (the bytes may be a view of a network buffer that is reused right after); writes go on in the
 * background, at most WRITES_AHEAD at once, beyond which `feed` takes nothing more until `ready()`.
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
  #buf?: Buffer;
  /**
   * The current block's hash, fed each run of bytes as it is copied in: when its last byte lands only that run is
   * left to hash, not the whole 256 KiB (0.15–0.19 ms at this project's measured sha256 rate), so a block reaches
   * its readers that much sooner on every hop. The bytes are hashed while still in cache from their copy.
   */
  #hash?: Hash;
  /** Framed: the current block is whole and its hash is being read (#theirsGot bytes of it so far). */
  #readingHash = false;
  readonly #theirs: Buffer;
  #theirsGot = 0;
  #writes = 0;
  #error?: unknown;
  readonly #waiting: (() => void)[] = [];
  /** The last `feed` stopped right after handing a block to its readers (see `handedOut`). */
  #handedOut = false;

  constructor(fh: FileHandle, offset: number, length: number, o: PieceSinkOptions = {}) {
    this.#fh = fh;
    this.#offset = offset;
    this.#length = length;
    this.#o = o;
    this.#base = o.blockBase ?? 0;
    this.#end = o.blockEnd ?? blockCountFor(length);
    this.#theirs = Buffer.alloc(o.framed ? BLOCK_HASH_BYTES : 0);
  }

  /** Every byte of its blocks was taken and checked (some may still be being written: see `finish`). */
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

  /**
   * Takes what of `chunk[from..]` belongs to this piece, synchronously; returns how many bytes that was: less than
   * offered once done, or while WRITES_AHEAD blocks are being written (then wait for `ready()`). Throws
   * PIECE_CORRUPT for a block that does not match, or the error of an earlier block's write.
   */
  feed(chunk: Buffer, from = 0): number {
    let off = from;
    this.#handedOut = false;
    while (off < chunk.length && !this.done && !this.#handedOut) {
      if (this.#error) throw this.#error;
      const b = this.#base + this.blocks.length;
      if (this.#readingHash) {
        const take = Math.min(BLOCK_HASH_BYTES - this.#theirsGot, chunk.length - off);
        chunk.copy(this.#theirs, this.#theirsGot, off, off + take);
        this.#theirsGot += take;
        off += take;
        if (this.#theirsGot === BLOCK_HASH_BYTES) this.#complete(b, this.#theirs.toString('hex'));
        continue;
      }
      if (!this.#buf) {
        if (this.#writes >= WRITES_AHEAD) break;
        this.#buf = gather.take();
        this.#hash = createHash('sha256');
      }
      const take = Math.min(this.#blockLen(b) - this.#inBlock, chunk.length - off);
      chunk.copy(this.#buf, this.#inBlock, off, off + take);
      this.#hash!.update(this.#buf.subarray(this.#inBlock, this.#inBlock + take));
      this.#inBlock += take;
      off += take;
      if (this.#inBlock === this.#blockLen(b)) {
        if (this.#o.framed) {
          this.#readingHash = true;
          this.#theirsGot = 0;
        } else this.#complete(b, undefined);
      }
    }
    return off - from;
  }

  /**
   * The last `feed` stopped after a block went to its readers (`onHashed`): the caller lets the event loop turn before
   * it feeds the rest of the chunk. One socket read can hold 1 MiB, four blocks to copy and hash: without the turn, a
   * reader handed the first of them (the supernode's piece API answering a Range read) could send it only after the
   * other three were hashed (0.8 ms later, traced on the range benchmark; 0.14 ms with the turn).
   */
  get handedOut(): boolean {
    return this.#handedOut;
  }

  /** Resolves once `feed` takes bytes again (a write finished); rejects with a failed write's error. */
  ready(): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (this.#writes < WRITES_AHEAD) return Promise.resolve();
    return new Promise<void>((resolve) => this.#waiting.push(resolve)).then(() => this.ready());
  }

  /** Resolves once every block taken is written and reported; rejects with a failed write's error. */
  async finish(): Promise<void> {
    while (this.#writes > 0) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    if (this.#error) throw this.#error;
  }

  /**
   * Gives back the block buffer being filled (the piece was abandoned). A consumer still holding a chunk of this
   * attempt may call `feed` later: it then throws, so nothing of an abandoned attempt is hashed, written or reported.
   */
  drop(): void {
    if (this.#buf) gather.release(this.#buf);
    this.#buf = undefined;
    this.#hash = undefined;
    this.#error ??= pieceError('PIECE_SHORT', `${this.#o.label ?? `@${this.#offset}`}: the attempt was abandoned`);
  }

  #complete(b: number, framedSha: string | undefined): void {
    const buf = this.#buf!;
    const size = this.#inBlock;
    const bytes = buf.subarray(0, size);
    const sha = this.#hash!.digest('hex');
    this.#hash = undefined;
    this.#buf = undefined;
    this.#inBlock = 0;
    this.#readingHash = false;
    const label = this.#o.label ?? `@${this.#offset}`;
    const want = this.#o.expected?.[b];
    const stored = this.#o.have?.(b) ?? false;
    let bad: Error | undefined;
    if (framedSha !== undefined && sha !== framedSha) bad = pieceError('PIECE_CORRUPT', `${label} block ${b}: sha256 ${sha} != ${framedSha} (framed)`);
    else if (want !== undefined && sha !== want) {
      // Against a block already on disk: the stored copy and the source disagree, so the stored copy is suspect too.
      bad = pieceError('PIECE_CORRUPT', `${label} block ${b}: sha256 ${sha} != ${want}${stored ? ' (stored)' : ''}`);
      if (stored) Object.assign(bad, { storedBlock: b });
    }
    // Nothing to write (refused, or already on disk): the buffer goes straight back.
    if (bad || stored) gather.release(buf);
    if (bad) throw bad;
    this.blocks.push(sha);
    if (stored) return;
    const data = [bytes];
    holders.set(data, { buf, count: 0 });
    // The sink's own hold, let go once the block is written and reported.
    const own = holdBlock(data);
    if (this.#o.onHashed) {
      this.#o.onHashed(b, sha, data);
      this.#handedOut = true;
    }
    this.#writes++;
    writeFully(this.#fh, bytes, this.#offset + b * BLOCK_SIZE).then(
      // Reported only when its bytes are in the file: a reader told "verified" finds them there.
      () => {
        try {
          this.#o.onBlock?.(b, sha, data);
        } catch (err) {
          this.#error ??= err;
        }
      },
      (err: unknown) => void (this.#error ??= err),
    ).finally(() => {
      own.release();
      this.#writes--;
      for (const wake of this.#waiting.splice(0)) wake();
    });
  }
}

/** Anything a piece body can come as: a stream, or a BulkClient body (whose chunks are valid during the call only). */
export type PieceBody = Readable | ChunkSource;

type ChunkSource = { forEach(fn: (chunk: Buffer) => Promise<void> | void): Promise<void>; discard(): void };

/** (A Readable has a `forEach` too, an iterator helper: what tells them apart is that a stream is async-iterable.) */
function isChunkSource(body: PieceBody): body is ChunkSource {
  return !(Symbol.asyncIterator in body);
}

async function eachChunk(body: PieceBody, fn: (chunk: Buffer) => Promise<void> | void): Promise<void> {
  if (isChunkSource(body)) return body.forEach(fn);
  for await (const chunk of body as AsyncIterable<Buffer>) {
    const r = fn(chunk);
    if (r) await r;
  }
}

/** Gives up a piece body that will not be read (or not to its end): its connection or stream is closed. */
export function discardPieceBody(body: PieceBody): void {
  if (isChunkSource(body)) body.discard();
  else discard(body);
}

/** Feeds `chunk[off..]` to the sinks in turn: synchronously while they take it, else once they are ready. */
function feedSinks(sinks: PieceSink[], at: { i: number }, chunk: Buffer, off: number, label: string, length: number): Promise<void> | void {
  while (off < chunk.length) {
    const sink = sinks[at.i];
    if (!sink) throw pieceError('PIECE_SHORT', `${label}: more than ${length} bytes`);
    off += sink.feed(chunk, off);
    if (sink.done) at.i++;
    else if (off < chunk.length) {
      const resume = off;
      // After a block went to its readers, a turn of the event loop first: their sends go out before more hashing.
      const go = sink.handedOut ? nextTurn().then(() => sink.ready()) : sink.ready();
      return go.then(() => feedSinks(sinks, at, chunk, resume, label, length));
    }
  }
}

/** Resolves after the event loop's pending callbacks and every queued promise job have run. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
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
export async function writePiece(fh: FileHandle, offset: number, length: number, body: PieceBody, opts: WritePieceOptions = {}): Promise<string[]> {
  const label = opts.label ?? `@${offset}`;
  const count = blockCountFor(length);
  const first = opts.firstBlock ?? 0;
  if (!Number.isInteger(first) || first < 0 || (count > 0 && first >= count)) throw pieceError('PIECE_SHORT', `${label}: no block ${first}`);
  const sinks =
    first > 0
      ? [new PieceSink(fh, offset, length, { ...opts, label, blockBase: first, blockEnd: count }), new PieceSink(fh, offset, length, { ...opts, label, blockBase: 0, blockEnd: first })]
      : [new PieceSink(fh, offset, length, { ...opts, label })];
  const at = { i: 0 };
  const take = (chunk: Buffer): Promise<void> | void => {
    opts.signal?.throwIfAborted();
    const paced = opts.pace?.(chunk.length, opts.signal);
    if (paced) return paced.then(() => (opts.onBytes?.(chunk.length), feedSinks(sinks, at, chunk, 0, label, length)));
    opts.onBytes?.(chunk.length);
    return feedSinks(sinks, at, chunk, 0, label, length);
  };
  try {
    await eachChunk(body, take);
    for (const s of sinks) await s.finish();
  } catch (err) {
    discardPieceBody(body);
    // Blocks already checked finish their writes (and are reported) before this attempt is over.
    for (const s of sinks) s.drop();
    await Promise.allSettled(sinks.map((s) => s.finish()));
    if (isDiskFull(err)) throw pieceError('PIECE_DISK_FULL', label, err);
    throw err;
  }
  if (!sinks.every((s) => s.done)) {
    throw pieceError('PIECE_SHORT', `${label}: got ${sinks.reduce((a, s) => a + s.received, 0)} of ${sinks.reduce((a, s) => a + s.expectedBytes, 0)} bytes`);
  }
  return first > 0 ? [...sinks[1]!.blocks, ...sinks[0]!.blocks] : sinks[0]!.blocks;
}

/** Buffers stored pieces are read back into for their check (a few blocks at a time, whatever the piece size). */
const verifyBuffers = new BufferPool(BLOCK_SIZE, 4);

/**
 * Checks a stored piece against its block hashes by reading it back one block at a time into a reused buffer (never
 * the piece in one Buffer, no fresh buffer per read). For pieces this process did not write and hash itself (found on
 * disk at start-up): a torn write or a bad disk is found here, before any byte of the piece is served.
 */
export async function verifyStoredPiece(path: string, offset: number, length: number, blocks: readonly string[], label = `@${offset}`): Promise<void> {
  let b = 0;
  // Block-sized buffers from the piece's start: each chunk is one block.
  const got = await readFileChunks(path, offset, length, verifyBuffers, (block) => {
    checkBlock(block, blocks[b], `${label} block ${b}`);
    b++;
  });
  if (got < length) throw pieceError('PIECE_SHORT', `${label}: data file has ${got} of ${length} bytes`);
}

/** Throws PIECE_CORRUPT, naming `what`, unless `bytes` hash to `want`. */
function checkBlock(bytes: Buffer, want: string | undefined, what: string): void {
  const actual = createHash('sha256').update(bytes).digest('hex');
  if (actual !== want) throw pieceError('PIECE_CORRUPT', `${what}: on-disk sha256 ${actual} != ${want}`);
}

/**
 * Reads whole blocks [pos, end) of a file into a buffer of `pool` and checks each against `blockSha(k)` (k: the
 * block's index in the file, at k * BLOCK_SIZE): the buffer, or an error (the buffer back in the pool). For a file
 * whose bytes may change between any check and the read (a data file a local client holds too): what is then sent
 * from the buffer is exactly what matched.
 */
async function readChecked(fh: FileHandle, pos: number, end: number, blockSha: (k: number) => string | undefined, label: string, pool: BufferPool, signal?: AbortSignal): Promise<Buffer> {
  const buf = await pool.acquire(signal);
  try {
    const got = await readFull(fh, buf, end - pos, pos, signal);
    if (got < end - pos) throw pieceError('PIECE_SHORT', `${label}: data file has ${pos + got} of ${end} bytes`);
    for (let at = pos; at < end; at += BLOCK_SIZE) checkBlock(buf.subarray(at - pos, Math.min(end, at + BLOCK_SIZE) - pos), blockSha(at / BLOCK_SIZE), `${label} block at byte ${at}`);
    return buf;
  } catch (err) {
    pool.release(buf);
    throw err;
  }
}

/**
 * One block (`length` ≤ BLOCK_SIZE bytes at `offset`) read and checked against `sha` (see readChecked), in a buffer of
 * `pool` (the caller's serving buffers, so memory stays bounded however many read), which goes back to the pool once
 * sent, or once sending failed.
 */
export async function readCheckedBlock(fh: FileHandle, offset: number, length: number, sha: string, label: string, { pool, signal }: { pool: BufferPool; signal?: AbortSignal }): Promise<BlockReady> {
  const buf = await readChecked(fh, offset, offset + length, () => sha, label, pool, signal);
  const back = () => pool.release(buf);
  return { sha, data: [buf.subarray(0, length)], release: back, failed: back };
}

/**
 * Sends bytes [from, to] of a file whose bytes may change under this process at any moment, every byte checked as it
 * is read (see readChecked): whole blocks, as many as a buffer of `pool` holds, blocks never straddling pieces, and
 * only then the asked-for part of them written, with backpressure. `enterPiece(n)` is awaited before the first read
 * in each piece. A block that does not match throws PIECE_CORRUPT before any byte of it is written.
 */
export async function serveCheckedRange(
  fh: FileHandle,
  from: number,
  to: number,
  out: Writable,
  o: { size: number; pieceSize: number; blockSha(k: number): string | undefined; enterPiece?(n: number): Promise<void>; label: string; pool: BufferPool; signal?: AbortSignal; stallMs?: number; onBytes?: (n: number) => void },
): Promise<void> {
  const per = Math.max(1, Math.floor(o.pool.size / BLOCK_SIZE)) * BLOCK_SIZE;
  let piece = -1;
  /** Whole blocks from `pos`, up to the buffer's size, the end of its piece and the block holding `to`, checked. */
  const readChunk = async (pos: number): Promise<{ buf: Buffer; pos: number; end: number }> => {
    const n = Math.floor(pos / o.pieceSize);
    if (n !== piece) {
      await o.enterPiece?.(n);
      piece = n;
    }
    const end = Math.min(pos + per, (n + 1) * o.pieceSize, Math.floor(to / BLOCK_SIZE) * BLOCK_SIZE + BLOCK_SIZE, o.size);
    return { buf: await readChecked(fh, pos, end, o.blockSha, o.label, o.pool, o.signal), pos, end };
  };
  // The next chunk is read and checked while this one is sent.
  let next: Promise<{ buf: Buffer; pos: number; end: number }> | undefined = readChunk(Math.floor(from / BLOCK_SIZE) * BLOCK_SIZE);
  try {
    while (next) {
      const { buf, pos, end } = await next;
      next = undefined;
      try {
        o.signal?.throwIfAborted();
        if (end <= to) next = readChunk(end);
        const a = Math.max(from, pos) - pos;
        const z = Math.min(to + 1, end) - pos;
        await put(out, buf.subarray(a, z), o.stallMs ?? 10_000);
        o.onBytes?.(z - a);
      } finally {
        o.pool.release(buf);
      }
    }
  } finally {
    // A chunk read ahead for an answer that failed goes back to the pool.
    if (next) await next.then((c) => o.pool.release(c.buf), () => {});
  }
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
    /** Block hashes piece `n`'s bytes must match (blocks verified before, e.g. by a Range fetch), as in writePiece. */
    expected?: (n: number) => readonly (string | undefined)[];
    /** Blocks of piece `n` already verified on disk: checked again, never rewritten. */
    have?: (n: number, b: number) => boolean;
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
          sink ??= new PieceSink(fh, n * pieceSize, pieceEnd - n * pieceSize, {
            label: `@${n * pieceSize}`,
            onBlock: (b, sha, data) => opts.onBlock?.(piece, b, sha, data),
            ...(opts.expected ? { expected: opts.expected(piece) } : {}),
            ...(opts.have ? { have: (b: number) => opts.have!(piece, b) } : {}),
          });
          const took = sink.feed(chunk, off);
          pos += took;
          off += took;
          if (off < chunk.length && !sink.done) await sink.ready();
        }
        if (pos === pieceEnd) {
          if (sink) {
            await sink.finish();
            await opts.onPiece(n, sink.blocks);
          }
          sink = undefined;
          n++;
        }
      }
    }
  } catch (err) {
    discard(body);
    if (sink) {
      sink.drop();
      await sink.finish().catch(() => {});
    }
    if (isDiskFull(err)) throw pieceError('PIECE_DISK_FULL', `@${pos}`, err);
    throw err;
  }
  if (pos !== length) throw pieceError('PIECE_SHORT', `origin body ended at ${pos} of ${length} bytes`);
}
