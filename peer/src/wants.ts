/**
 * What a download run's readers want: everything (a whole-blob GET, prefetch) or only the pieces Range readers asked
 * for, and where in those pieces each reader starts, so a piece is fetched from the block its reader needs first.
 */
import { BLOCK_SIZE } from '@damselfly/shared';
import type { LocalTask } from './local-task.js';

/** Range readers' start offsets kept: a long Range-read run (nydusd) asks many times and only recent asks matter. */
const MAX_STARTS = 64;

export class Wants {
  #all: boolean;
  readonly #pieces = new Set<number>();
  /** Byte offsets Range readers start at, oldest first. */
  readonly #startAt: number[] = [];

  constructor(all: boolean) {
    this.#all = all;
  }

  add(pieces: readonly number[] | 'all', startAt?: number): void {
    if (pieces === 'all') this.#all = true;
    else for (const n of pieces) this.#pieces.add(n);
    if (startAt !== undefined && startAt > 0) {
      this.#startAt.push(startAt);
      if (this.#startAt.length > MAX_STARTS) this.#startAt.shift();
    }
  }

  /** The task's missing pieces that are wanted, in piece order. */
  missing(task: LocalTask): number[] {
    const missing = task.missing();
    return this.#all ? missing : missing.filter((n) => this.#pieces.has(n));
  }

  /** The block piece `n` is fetched from first: where its oldest reader starts, else its first. */
  firstBlock(task: LocalTask, n: number): number {
    const { pieceSize } = task.info;
    const at = this.#startAt.find((pos) => Math.floor(pos / pieceSize) === n);
    return at === undefined ? 0 : blockAt(at, pieceSize);
  }

  /**
   * The pieces of `want` that Range readers wait on, with the block each needs first (the supernode seeds from
   * there), as `firstBlock` picks it. At most 64, as the protocol allows.
   */
  readers(task: LocalTask, want: readonly number[]): { piece: number; block: number }[] {
    const { pieceSize } = task.info;
    const wanted = new Set(want);
    const out = new Map<number, number>();
    for (const pos of this.#startAt) {
      const piece = Math.floor(pos / pieceSize);
      if (wanted.has(piece) && !out.has(piece)) out.set(piece, blockAt(pos, pieceSize));
    }
    return [...out].map(([piece, block]) => ({ piece, block }));
  }
}

/** The block of its piece that byte `pos` of a task lies in. */
function blockAt(pos: number, pieceSize: number): number {
  return Math.floor((pos % pieceSize) / BLOCK_SIZE);
}
