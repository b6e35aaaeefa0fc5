/**
 * A whole-blob check against an OCI digest, fed as pieces land. The supernode runs one per task as it seeds; a
 * dfdaemon fetching from the origin itself (no supernode) runs one too. The in-order prefix of seeded bytes is fed into one running sha256, and when it
 * reaches the end the result is compared with the task's digest. A task whose bytes do not match is dropped and
 * refused, so the digest it claimed never serves foreign bytes again.
 *
 * One hash pass: a block that lands exactly where the prefix ends is fed from the bytes just hashed for its block
 * record (`offer`), never read back. Only blocks that landed ahead of the prefix (pieces seeded out of order, in
 * parallel) are read back from the data file when the prefix reaches them, from the page cache in the common case.
 */
import { createHash, type Hash } from 'node:crypto';
import { BLOCK_SIZE, blockCountFor } from './blocks.js';
import { pieceRange } from './piece-size.js';
import { BufferPool } from './buffer-pool.js';
import { readFileChunks } from './file-chunks.js';

/** Read-back goes through a few reused buffers: a fresh one per read was a GiB of garbage per GiB read back. */
const readBack = new BufferPool(1 << 20, 4);

/** What a check needs to know of its task. */
export interface DigestCheckTask {
  /** `sha256:<hex>`. */
  digest?: string;
  contentLength: number;
  pieceSize: number;
  pieceCount: number;
}

export interface DigestCheckDeps {
  /** Whether piece n is seeded (its hashes recorded). */
  seeded(n: number): boolean;
  dataPath: string;
  signal: AbortSignal;
}

export type DigestOutcome = 'pending' | 'match' | 'mismatch';

export class DigestCheck {
  readonly #meta: DigestCheckTask;
  readonly #deps: DigestCheckDeps;
  readonly #want: string;
  /** The prefix ends at block `#block` of piece `#piece`. */
  #piece = 0;
  #block = 0;
  #reading = false;
  #hash: Hash = createHash('sha256');
  #running: Promise<DigestOutcome> = Promise.resolve('pending');
  /** Bytes fed from blocks as they landed, and read back from disk (for metrics and tests). */
  inlineBytes = 0;
  readBackBytes = 0;
  /** sha256 hex of the whole blob once it was read. */
  actual?: string;

  constructor(meta: DigestCheckTask, deps: DigestCheckDeps) {
    this.#meta = meta;
    this.#deps = deps;
    this.#want = meta.digest!.slice('sha256:'.length);
  }

  #blocksOf(n: number): number {
    const { start, end } = pieceRange(n, this.#meta.pieceSize, this.#meta.contentLength);
    return blockCountFor(end - start + 1);
  }

  #step(): void {
    this.#block++;
    if (this.#block === this.#blocksOf(this.#piece)) {
      this.#piece++;
      this.#block = 0;
    }
  }

  /** Block `b` of piece `n` was just verified and written, with these bytes: fed if it is where the prefix ends. */
  offer(n: number, b: number, data: readonly Buffer[]): void {
    if (this.#reading || this.actual !== undefined || n !== this.#piece || b !== this.#block) return;
    for (const d of data) {
      this.#hash.update(d);
      this.inlineBytes += d.length;
    }
    this.#step();
  }

  /**
   * Whether any byte of piece `n` is in the hash (the prefix ends past the piece's start). Such a check cannot take
   * other bytes for those blocks: if they are forgotten, the check must be dropped and a new one started.
   */
  hasFed(n: number): boolean {
    return this.#piece > n || (this.#piece === n && this.#block > 0);
  }

  /** Feeds whatever seeded pieces the prefix can now cover from disk; serialised, so reads never interleave. */
  advance(): Promise<DigestOutcome> {
    this.#running = this.#running.then(() => this.#advance());
    return this.#running;
  }

  /** Feeds bytes [from, end] of the data file into the digest. */
  async #readBack(from: number, end: number): Promise<void> {
    // A file cut short feeds fewer bytes: the digest then does not match, which is the answer for it.
    await readFileChunks(this.#deps.dataPath, from, end - from + 1, readBack, (chunk) => {
      this.#hash.update(chunk);
      this.readBackBytes += chunk.length;
    }, this.#deps.signal);
  }

  async #advance(): Promise<DigestOutcome> {
    const { pieceCount, pieceSize, contentLength } = this.#meta;
    this.#reading = true;
    try {
      while (this.#piece < pieceCount && this.#deps.seeded(this.#piece)) {
        const { start, end } = pieceRange(this.#piece, pieceSize, contentLength);
        const from = start + this.#block * BLOCK_SIZE;
        if (from <= end) await this.#readBack(from, end);
        this.#piece++;
        this.#block = 0;
      }
    } finally {
      this.#reading = false;
    }
    if (this.actual === undefined) {
      if (this.#piece < pieceCount) return 'pending';
      this.actual = this.#hash.digest('hex');
    }
    return this.actual === this.#want ? 'match' : 'mismatch';
  }
}
