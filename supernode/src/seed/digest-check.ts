/**
 * The supernode's whole-blob check: as pieces are seeded (in any order), the in-order prefix of seeded pieces is fed
 * into one running sha256; when the prefix reaches the end, the result is compared with the task's digest. A task
 * whose bytes do not match is dropped and refused, so the digest it claimed never serves foreign bytes again.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { pieceRange } from '@damselfly/shared';
import type { TaskMeta } from '../resource/task-meta.js';

export interface DigestCheckDeps {
  /** Whether piece n is seeded (its hash recorded). */
  seeded(n: number): boolean;
  dataPath: string;
  signal: AbortSignal;
}

export type DigestOutcome = 'pending' | 'match' | 'mismatch';

export class DigestCheck {
  readonly #meta: TaskMeta;
  readonly #deps: DigestCheckDeps;
  readonly #want: string;
  #next = 0;
  #hash: Hash = createHash('sha256');
  #running: Promise<DigestOutcome> = Promise.resolve('pending');
  /** sha256 hex of the whole blob once it was read. */
  actual?: string;

  constructor(meta: TaskMeta, deps: DigestCheckDeps) {
    this.#meta = meta;
    this.#deps = deps;
    this.#want = meta.digest!.slice('sha256:'.length);
  }

  /** Feeds whatever the seeded prefix grew by; serialised, so concurrent calls never interleave the hash. */
  advance(): Promise<DigestOutcome> {
    this.#running = this.#running.then(() => this.#advance());
    return this.#running;
  }

  async #advance(): Promise<DigestOutcome> {
    const { pieceCount, pieceSize, contentLength } = this.#meta;
    while (this.#next < pieceCount && this.#deps.seeded(this.#next)) {
      const { start, end } = pieceRange(this.#next, pieceSize, contentLength);
      // The prefix advances piece by piece, from the page cache in the common case; nothing is held in memory.
      for await (const chunk of createReadStream(this.#deps.dataPath, { start, end, highWaterMark: 1 << 20, signal: this.#deps.signal })) {
        this.#hash.update(chunk as Buffer);
      }
      this.#next++;
    }
    if (this.#next < pieceCount || this.actual) return this.actual ? (this.actual === this.#want ? 'match' : 'mismatch') : 'pending';
    this.actual = this.#hash.digest('hex');
    return this.actual === this.#want ? 'match' : 'mismatch';
  }
}
