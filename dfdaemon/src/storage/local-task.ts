/**
 * One task in the local cache: its data file, which pieces are present and verified, which blocks of pieces still
 * arriving are, and waiters for both. A piece counts as present only after every block was hashed, matched, written
 * and the piece recorded in the index; a block of a piece in flight counts (in memory only, for serving) once it was
 * hashed, matched and written. Nothing of a piece in flight is persisted, so a crash leaves no block marked verified.
 */
import { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import {
  TaskIndex,
  blockCountFor,
  isDigestMismatch,
  joinBlocks,
  pieceRange,
  pieceRoot,
  splitBlocks,
  verifyStoredPiece,
  writePiece,
  type HandleCache,
  type TaskInfo,
} from '@damselfly/shared';
import { dfError } from '../errors.js';

export interface LocalTaskMeta {
  info: TaskInfo;
  url: string;
  /** All pieces present and the whole blob matched its digest (when one is known). */
  complete: boolean;
  lastAccess: number;
}

export interface LocalTaskEvents {
  /** Block b of piece n was verified and written (piece still in flight); its bytes, valid for the listeners. */
  'block:verified': [number, number, (readonly Buffer[]) | undefined];
  /** Block b of piece n matched its hash and is being written: its bytes for readers waiting for it right now. */
  'block:hashed': [number, number, readonly Buffer[]];
  'piece:verified': [number];
  'task:completed': [];
  'task:failed': [Error];
}

export class LocalTask extends EventEmitter<LocalTaskEvents> {
  readonly info: TaskInfo;
  readonly dataPath: string;
  readonly #index: TaskIndex<LocalTaskMeta>;
  /** Present pieces: block hashes and their root (the piece's identity in reports and registrations). */
  readonly #pieces: Map<number, { blocks: string[]; root: string }>;
  /** Verified blocks of pieces not yet present (kept across attempts: a retry never rewrites them). */
  readonly #partial = new Map<number, (string | undefined)[]>();
  /** Pieces whose bytes this process hashed (on write or on a checked read); others are re-hashed when read. */
  readonly #checked = new Set<number>();
  #meta: LocalTaskMeta;
  readonly #handles: HandleCache;
  #failure?: Error;
  /** Leases held by readers, uploads and downloads; GC never evicts a task in use. */
  #leases = 0;

  /** Takes a lease on the task (GC leaves it alone) until the returned function is called; calling it twice is harmless. */
  lease(): () => void {
    this.#leases++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#leases--;
    };
  }

  get inUse(): boolean {
    return this.#leases > 0;
  }

  readonly #onDropped: (n: number) => void;

  constructor(
    meta: LocalTaskMeta,
    stored: Map<number, string>,
    dataPath: string,
    index: TaskIndex<LocalTaskMeta>,
    handles: HandleCache,
    onDropped: (n: number) => void = () => {},
  ) {
    super();
    this.setMaxListeners(0);
    this.#meta = meta;
    this.info = meta.info;
    // A record that is not one hash per block of its piece (an older format, damage) counts as absent: fetched again.
    this.#pieces = new Map();
    for (const [n, v] of stored) {
      const blocks = n < meta.info.pieceCount ? splitBlocks(v, this.range(n).length) : undefined;
      if (blocks) this.#pieces.set(n, { blocks, root: pieceRoot(blocks) });
    }
    this.dataPath = dataPath;
    this.#index = index;
    this.#handles = handles;
    this.#onDropped = onDropped;
  }

  get complete(): boolean {
    return this.#meta.complete;
  }
  get lastAccess(): number {
    return this.#meta.lastAccess;
  }
  get failure(): Error | undefined {
    return this.#failure;
  }
  get presentCount(): number {
    return this.#pieces.size;
  }
  has(n: number): boolean {
    return this.#pieces.has(n);
  }
  /** The piece's identity (root of its block hashes). */
  sha(n: number): string | undefined {
    return this.#pieces.get(n)?.root;
  }
  /** Whether piece `n` is being fetched right now (its verified blocks can be relayed as they land). */
  writing(n: number): boolean {
    return (this.#fetching.get(n) ?? 0) > 0;
  }
  readonly #fetching = new Map<number, number>();

  /** A fetch of piece `n` starts (from before its request goes out): call the returned function when it ends. */
  beginFetch(n: number): () => void {
    this.#fetching.set(n, (this.#fetching.get(n) ?? 0) + 1);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const left = (this.#fetching.get(n) ?? 1) - 1;
      if (left > 0) this.#fetching.set(n, left);
      else this.#fetching.delete(n);
    };
  }

  /** Whether block `b` of piece `n` is verified (the piece present, or the block landed while it is in flight). */
  hasBlock(n: number, b: number): boolean {
    return this.#pieces.has(n) || this.#partial.get(n)?.[b] !== undefined;
  }
  present(): number[] {
    return [...this.#pieces.keys()];
  }
  missing(): number[] {
    const out: number[] = [];
    for (let n = 0; n < this.info.pieceCount; n++) if (!this.#pieces.has(n)) out.push(n);
    return out;
  }
  range(n: number): { start: number; end: number; length: number } {
    const r = pieceRange(n, this.info.pieceSize, this.info.contentLength);
    return { ...r, length: r.end - r.start + 1 };
  }

  /**
   * Writes piece `n` from `body` block by block, each checked against `expected` (the supernode's hashes) or, with
   * `framed`, against the hash that follows it in the body; every block is announced (`block:verified`) as soon as it
   * is on disk, so readers stream it at once. Blocks an earlier attempt verified are checked, not rewritten. Resolves
   * with the block hashes once the piece is recorded.
   */
  async writePiece(
    n: number,
    body: Readable,
    opts: {
      expected?: readonly string[];
      framed?: boolean;
      /** The body starts at this block and wraps around (a framed supernode body asked for with `?from=`). */
      firstBlock?: number;
      signal?: AbortSignal;
      onBytes?: (n: number) => void;
      /** Each new block with its bytes (valid during the call): a back-to-source digest check feeds on them. */
      onBlock?: (b: number, sha: string, data: readonly Buffer[]) => void;
    } = {},
  ): Promise<string[]> {
    const { start, length } = this.range(n);
    let partial = this.#partial.get(n);
    if (!partial) this.#partial.set(n, (partial = new Array<string | undefined>(blockCountFor(length)).fill(undefined)));
    const landed = partial;
    const expected = opts.expected ?? landed;
    const end = this.beginFetch(n);
    const blocks = await this.#handles.use(this.dataPath, (fh) =>
      writePiece(fh, start, length, body, {
        expected,
        framed: opts.framed,
        firstBlock: opts.firstBlock,
        signal: opts.signal,
        onBytes: opts.onBytes,
        label: `${this.info.taskId}#${n}`,
        have: (b) => landed[b] !== undefined,
        onHashed: (b, _sha, data) => void (this.#partial.get(n) === landed && this.emit('block:hashed', n, b, data)),
        onBlock: (b, sha, data) => {
          if (this.#partial.get(n) !== landed) return;
          landed[b] = sha;
          opts.onBlock?.(b, sha, data);
          this.emit('block:verified', n, b, data);
        },
      }),
    ).finally(end);
    await this.recordPiece(n, blocks);
    return blocks;
  }

  /** Block `b` of piece `n` was hashed and written by a whole-stream read: readers may have it now. */
  landed(n: number, b: number, sha: string, data?: readonly Buffer[]): void {
    if (this.#pieces.has(n)) return;
    let partial = this.#partial.get(n);
    if (!partial) this.#partial.set(n, (partial = new Array<string | undefined>(blockCountFor(this.range(n).length)).fill(undefined)));
    if (partial[b] !== undefined) return;
    partial[b] = sha;
    this.emit('block:verified', n, b, data);
  }

  /** Records a piece whose blocks were all hashed and written (by `writePiece` or a whole-stream read). */
  async recordPiece(n: number, blocks: string[]): Promise<void> {
    await this.#index.putPiece(this.info.taskId, n, joinBlocks(blocks));
    this.#pieces.set(n, { blocks, root: pieceRoot(blocks) });
    this.#partial.delete(n);
    this.#checked.add(n);
    this.emit('piece:verified', n);
  }

  /**
   * Makes sure piece `n` on disk is what its hash says: free for a piece this process wrote and hashed, one read-back
   * for one found on disk at start-up. A mismatch drops the piece (it is fetched again) and throws.
   */
  async ensureVerified(n: number): Promise<void> {
    const piece = this.#pieces.get(n);
    if (!piece) throw dfError('DF_PIECE_NOT_FOUND', `${this.info.taskId}#${n}`);
    if (this.#checked.has(n)) return;
    const { start, length } = this.range(n);
    try {
      await verifyStoredPiece(this.dataPath, start, length, piece.blocks, `${this.info.taskId}#${n}`);
      this.#checked.add(n);
    } catch (err) {
      await this.dropPiece(n);
      throw err;
    }
  }

  /**
   * File offsets of bytes [from, to] of piece `n` (offsets within the piece, inclusive; default the whole piece),
   * after making sure the piece is verified: serving reads them from disk, never holding a piece in memory.
   */
  async pieceExtent(n: number, from = 0, to?: number): Promise<{ start: number; end: number }> {
    await this.ensureVerified(n);
    const { start, length } = this.range(n);
    return { start: start + from, end: start + (to ?? length - 1) };
  }

  /**
   * Re-hashes present pieces this process has not checked yet (found on disk at start-up), dropping bad ones so they
   * are fetched again. Returns the dropped piece numbers.
   */
  async recheck(pieces: readonly number[] = this.present()): Promise<number[]> {
    const dropped: number[] = [];
    for (const n of pieces) {
      if (!this.#pieces.has(n) || this.#checked.has(n)) continue;
      try {
        await this.ensureVerified(n);
      } catch {
        dropped.push(n);
      }
    }
    return dropped;
  }

  async dropPiece(n: number): Promise<void> {
    if (this.#pieces.has(n)) this.#onDropped(n);
    this.#pieces.delete(n);
    this.#partial.delete(n);
    this.#checked.delete(n);
    if (this.#meta.complete) await this.#setMeta({ complete: false });
    await this.#index.deletePiece(this.info.taskId, n);
  }

  /** Resolves when piece `n` is present; rejects if the task fails or `signal` aborts. */
  waitPiece(n: number, { signal }: { signal?: AbortSignal } = {}): Promise<void> {
    // A task whose bytes were found not to be its digest's hands out nothing, not even pieces it still has on disk.
    if (this.#failure && isDigestMismatch(this.#failure)) return Promise.reject(this.#failure);
    if (this.#pieces.has(n)) return Promise.resolve();
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        this.off('piece:verified', onPiece);
        this.off('task:failed', onFail);
        signal?.removeEventListener('abort', onAbort);
      };
      const onPiece = (m: number) => {
        if (m !== n) return;
        cleanup();
        resolve();
      };
      const onFail = (err: Error) => {
        cleanup();
        reject(err);
      };
      const onAbort = () => {
        cleanup();
        reject(signal!.reason);
      };
      this.on('piece:verified', onPiece);
      this.on('task:failed', onFail);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Resolves when block `b` of piece `n` may be served: the piece is present (checked from disk first if this process
   * did not write it), or the block was verified while the piece is in flight (then with its bytes, when it landed
   * during the wait). Rejects if the task fails.
   */
  async waitBlock(n: number, b: number, { signal }: { signal?: AbortSignal } = {}): Promise<readonly Buffer[] | undefined> {
    if (this.#failure && isDigestMismatch(this.#failure)) throw this.#failure;
    let data: readonly Buffer[] | undefined;
    if (!this.hasBlock(n, b)) {
      if (this.#failure) throw this.#failure;
      data = await new Promise<readonly Buffer[] | undefined>((resolve, reject) => {
        const cleanup = () => {
          this.off('block:verified', onBlock);
          this.off('block:hashed', onBlock);
          this.off('piece:verified', onPiece);
          this.off('task:failed', onFail);
          signal?.removeEventListener('abort', onAbort);
        };
        const onBlock = (m: number, c: number, bytes: (readonly Buffer[]) | undefined) => void (m === n && c === b && (cleanup(), resolve(bytes)));
        const onPiece = (m: number) => void (m === n && (cleanup(), resolve(undefined)));
        const onFail = (err: Error) => (cleanup(), reject(err));
        const onAbort = () => (cleanup(), reject(signal!.reason));
        this.on('block:verified', onBlock);
        this.on('block:hashed', onBlock);
        this.on('piece:verified', onPiece);
        this.on('task:failed', onFail);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
      // Bytes in hand (hashed, being written): nothing to read from disk, nothing to re-check.
      if (data) return data;
    }
    if (this.#pieces.has(n)) await this.ensureVerified(n);
    // The bytes of a block that landed while waited for: the reader sends them without reading the block back.
    return data;
  }

  /** Resolves when the whole task is complete and verified. */
  waitComplete({ signal }: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.#meta.complete) return Promise.resolve();
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        this.off('task:completed', onDone);
        this.off('task:failed', onFail);
        signal?.removeEventListener('abort', onAbort);
      };
      const onDone = () => (cleanup(), resolve());
      const onFail = (err: Error) => (cleanup(), reject(err));
      const onAbort = () => (cleanup(), reject(signal!.reason));
      this.on('task:completed', onDone);
      this.on('task:failed', onFail);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  async markComplete(): Promise<void> {
    await this.#setMeta({ complete: true });
    this.#failure = undefined;
    this.emit('task:completed');
  }

  /** The download failed: wake every waiter with the error. A later download may try again. */
  fail(err: Error): void {
    this.#failure = err;
    this.emit('task:failed', err);
  }

  resetFailure(): void {
    this.#failure = undefined;
  }

  async touch(): Promise<void> {
    await this.#setMeta({ lastAccess: Date.now() });
  }

  async close(): Promise<void> {
    await this.#handles.close(this.dataPath);
  }

  async #setMeta(patch: Partial<LocalTaskMeta>): Promise<void> {
    this.#meta = { ...this.#meta, ...patch };
    await this.#index.putTask(this.info.taskId, this.#meta);
  }
}
