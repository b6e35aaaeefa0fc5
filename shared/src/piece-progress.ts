/**
 * The verified blocks of one piece while it is being written: readers (a Range client, a peer, a supernode piece
 * request) wait here for the block they need and read it from the data file as soon as it is verified, without
 * waiting for the rest of the piece. In memory only: nothing of a piece in flight survives a restart, so a crash
 * can never leave a block marked verified whose bytes are not where they should be.
 */
import { EventEmitter } from 'node:events';
import type { BlockReady } from './serve-blocks.js';

export interface PieceProgressEvents {
  'block:verified': [number, string, (readonly Buffer[]) | undefined];
  /** Block b matched its hash and is being written: its bytes for whoever waits for it right now. */
  'block:hashed': [number, string, readonly Buffer[]];
  'piece:failed': [Error];
}

export class PieceProgress extends EventEmitter<PieceProgressEvents> {
  readonly blocks: (string | undefined)[];
  #failure?: Error;

  constructor(blockCount: number) {
    super();
    this.setMaxListeners(0);
    this.blocks = new Array<string | undefined>(blockCount).fill(undefined);
  }

  get failure(): Error | undefined {
    return this.#failure;
  }

  has(b: number): boolean {
    return this.blocks[b] !== undefined;
  }

  /**
   * Block `b` is on disk (written, not necessarily flushed) and matched `sha`. `data`, its bytes, go to the readers
   * waiting for it right now, which send them without reading the block back.
   */
  verified(b: number, sha: string, data?: readonly Buffer[]): void {
    if (this.blocks[b] !== undefined) return;
    this.blocks[b] = sha;
    this.emit('block:verified', b, sha, data);
  }

  /**
   * Hashes handed out before their blocks were written: a retry after a failed write must bring these same bytes
   * (downloaders may already hold them), so they count as expected.
   */
  readonly promised: (string | undefined)[] = [];

  /** Block `b` matched `sha` and is about to be written: readers waiting for it get its bytes now. */
  hashed(b: number, sha: string, data: readonly Buffer[]): void {
    if (this.blocks[b] !== undefined) return;
    this.promised[b] = sha;
    this.emit('block:hashed', b, sha, data);
  }

  /** What each block must hash to on a retry: its record, or the hash already handed out. */
  expected(): (string | undefined)[] {
    return this.blocks.map((sha, b) => sha ?? this.promised[b]);
  }

  /** The attempt failed: readers waiting on blocks not yet verified get `err` (a retry gets a new progress). */
  fail(err: Error): void {
    if (this.#failure) return;
    this.#failure = err;
    this.emit('piece:failed', err);
  }

  /**
   * Resolves with block `b`'s hash once verified (and its bytes, when it lands while waited for); rejects if the
   * attempt fails first or `signal` aborts.
   */
  waitBlock(b: number, { signal }: { signal?: AbortSignal } = {}): Promise<BlockReady> {
    const have = this.blocks[b];
    if (have !== undefined) return Promise.resolve({ sha: have });
    if (this.#failure) return Promise.reject(this.#failure);
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        this.off('block:verified', onBlock);
        this.off('block:hashed', onBlock);
        this.off('piece:failed', onFail);
        signal?.removeEventListener('abort', onAbort);
      };
      const onBlock = (m: number, sha: string, data: (readonly Buffer[]) | undefined) => {
        if (m !== b) return;
        cleanup();
        resolve({ sha, data });
      };
      const onFail = (err: Error) => (cleanup(), reject(err));
      const onAbort = () => (cleanup(), reject(signal!.reason));
      this.on('block:verified', onBlock);
      this.on('block:hashed', onBlock);
      this.on('piece:failed', onFail);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
