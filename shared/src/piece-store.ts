/**
 * The piece store both daemons keep: one data file per task plus a level index of verified pieces (their block
 * hashes), with what is known of pieces still arriving (verified blocks, in memory only), waiters for blocks and
 * pieces, leases that keep GC away, and the events the rest of a daemon follows: `block:hashed` and `block:verified`
 * as a piece lands, `piece:verified` when it is recorded, `piece:dropped` when one is found bad on disk, and (from the
 * store) `task:evicted`. A piece counts as present only after every block was hashed, matched, written and the piece
 * recorded; nothing of a piece in flight is persisted, so a crash never leaves a block marked verified.
 */
import { EventEmitter } from 'node:events';
import { access, chmod, mkdir, open, readdir, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { TaskIndex } from './task-index.js';
import { HandleCache } from './handle-cache.js';
import { ownedHere } from './file-owner.js';
import { blockCountFor, joinBlocks, pieceRoot, splitBlocks } from './blocks.js';
import { pieceRange } from './piece-size.js';
import { discardPieceBody, holdBlock, pieceError, verifyStoredPiece, writePiece, type HeldBlock, type Pace, type PieceBody } from './piece-file.js';
import { isDigestMismatch } from './errors.js';
import { isDiskFull } from './disk-full.js';

/** What the store needs to know of a task to place its pieces and blocks. */
export interface TaskGeometry {
  taskId: string;
  contentLength: number;
  pieceSize: number;
  pieceCount: number;
}

export interface StoredTaskEvents {
  /** Block b of piece n was verified and written (piece still in flight); its bytes, valid for the listeners. */
  'block:verified': [number, number, (readonly Buffer[]) | undefined];
  /** Block b of piece n matched its hash and is being written: its bytes for readers waiting for it right now. */
  'block:hashed': [number, number, readonly Buffer[]];
  'piece:verified': [number];
  'piece:dropped': [number];
  /** A fetch of piece n started (none was under way): it can be relayed from now on. */
  'fetch:started': [number];
  /** The last fetch of piece n under way ended without the piece (relays of it stop waiting). */
  'fetch:ended': [number];
  'task:completed': [];
  'task:failed': [Error];
  /** The data file is no longer the store's to serve or write (a user's changes to a file it shares, see `detach`). */
  'task:detached': [];
}

export interface StoredTaskInit<Meta> {
  meta: Meta;
  geometry: TaskGeometry;
  /** Piece records from the index (block hashes, concatenated hex). */
  stored?: Map<number, string>;
  dataPath: string;
  index: TaskIndex<Meta>;
  handles: HandleCache;
}

export class StoredTask<Meta extends object> extends EventEmitter<StoredTaskEvents> {
  readonly geometry: TaskGeometry;
  readonly dataPath: string;
  readonly #index: TaskIndex<Meta>;
  /** Present pieces: block hashes and their root (the piece's identity in reports and registrations). */
  readonly #pieces: Map<number, { blocks: string[]; root: string }>;
  /** Verified blocks of pieces not yet present (kept across attempts: a retry never rewrites them). */
  readonly #partial = new Map<number, (string | undefined)[]>();
  /**
   * Hashes of blocks handed to readers from memory before they were written (`hashed`): an attempt after a failed
   * write must bring these same bytes, since readers may already hold them.
   */
  readonly #promised = new Map<number, (string | undefined)[]>();
  /** Pieces whose bytes this process hashed (on write or on a checked read); others are re-hashed when read. */
  readonly #checked = new Set<number>();
  readonly #meta: Meta;
  readonly #handles: HandleCache;
  #failure?: Error;
  /** Leases held by readers, uploads and downloads; GC never evicts a task in use. */
  #leases = 0;
  /** Removed from its store: nothing may reopen its data file or write its record back. */
  #closed = false;

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

  constructor(init: StoredTaskInit<Meta>) {
    super();
    this.setMaxListeners(0);
    this.#meta = init.meta;
    this.geometry = init.geometry;
    this.dataPath = init.dataPath;
    this.#index = init.index;
    this.#handles = init.handles;
    // A record that is not one hash per block of its piece (an older format, damage) counts as absent: fetched again.
    this.#pieces = new Map();
    for (const [n, v] of init.stored ?? []) {
      const blocks = n < this.geometry.pieceCount ? splitBlocks(v, this.range(n).length) : undefined;
      if (blocks) this.#pieces.set(n, { blocks, root: pieceRoot(blocks) });
    }
  }

  /** The task's persisted record (read-only here: change it with `updateMeta`). */
  get meta(): Readonly<Meta> {
    return this.#meta;
  }

  /** Changes and persists part of the task's record, in place (holders of `meta` see the change). */
  async updateMeta(patch: Partial<Meta>): Promise<void> {
    Object.assign(this.#meta, patch);
    // A removed task's record stays removed (a reader that outlived the removal still marks it used).
    if (!this.#closed) await this.#index.putTask(this.geometry.taskId, this.#meta);
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
  /** The piece's block hashes, once present. */
  blocks(n: number): string[] | undefined {
    return this.#pieces.get(n)?.blocks;
  }
  /** Whether piece `n` is being fetched right now (its verified blocks can be relayed as they land). */
  writing(n: number): boolean {
    return (this.#fetching.get(n) ?? 0) > 0;
  }
  readonly #fetching = new Map<number, number>();

  /** A fetch of piece `n` starts (from before its request goes out): call the returned function when it ends. */
  beginFetch(n: number): () => void {
    const before = this.#fetching.get(n) ?? 0;
    this.#fetching.set(n, before + 1);
    if (before === 0) this.emit('fetch:started', n);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      const left = (this.#fetching.get(n) ?? 1) - 1;
      if (left > 0) this.#fetching.set(n, left);
      else {
        this.#fetching.delete(n);
        if (!this.#pieces.has(n)) this.emit('fetch:ended', n);
      }
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
    for (let n = 0; n < this.geometry.pieceCount; n++) if (!this.#pieces.has(n)) out.push(n);
    return out;
  }
  range(n: number): { start: number; end: number; length: number } {
    const r = pieceRange(n, this.geometry.pieceSize, this.geometry.contentLength);
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
    body: PieceBody,
    opts: {
      expected?: readonly string[];
      framed?: boolean;
      /** The body starts at this block and wraps around (a framed supernode body asked for with `?from=`). */
      firstBlock?: number;
      signal?: AbortSignal;
      onBytes?: (n: number) => void;
      /** A bandwidth limit the body is read under. */
      pace?: Pace;
      /** Each new block with its bytes (valid during the call): a back-to-source digest check feeds on them. */
      onBlock?: (b: number, sha: string, data: readonly Buffer[]) => void;
    } = {},
  ): Promise<string[]> {
    const { start, length } = this.range(n);
    let partial = this.#partial.get(n);
    // Blocks an earlier attempt left are reused only if they are what the supernode recorded: a block from another
    // source (the origin, fetched directly) that differs is not built on.
    if (partial && opts.expected?.some((sha, b) => partial![b] !== undefined && partial![b] !== sha)) partial = undefined;
    if (!partial) this.#partial.set(n, (partial = new Array<string | undefined>(blockCountFor(length)).fill(undefined)));
    const landed = partial;
    const expected = opts.expected ?? landed;
    const end = this.beginFetch(n);
    let taken = false;
    try {
      const blocks = await this.withFile((fh) => {
        taken = true;
        return writePiece(fh, start, length, body, {
          expected,
          framed: opts.framed,
          firstBlock: opts.firstBlock,
          signal: opts.signal,
          onBytes: opts.onBytes,
          pace: opts.pace,
          label: `${this.geometry.taskId}#${n}`,
          have: (b) => landed[b] !== undefined,
          onHashed: (b, _sha, data) => void (this.#partial.get(n) === landed && this.emit('block:hashed', n, b, data)),
          onBlock: (b, sha, data) => {
            if (this.#partial.get(n) !== landed) return;
            landed[b] = sha;
            opts.onBlock?.(b, sha, data);
            this.emit('block:verified', n, b, data);
          },
        });
      })
        .catch((err: unknown) => {
          // The file could not be opened (the task was removed meanwhile): the body was never read, and left alone it
          // would hold its connection, and the client's shutdown, for good.
          if (!taken) discardPieceBody(body);
          // A stored block the source disagrees with is dropped with the rest of the attempt: the next starts afresh.
          if ((err as { storedBlock?: number }).storedBlock !== undefined && this.#partial.get(n) === landed) this.#partial.delete(n);
          throw err;
        });
      await this.recordPiece(n, blocks);
      return blocks;
    } finally {
      // After the record: a fetch that ends with the piece present is not "ended without it".
      end();
    }
  }

  /**
   * Block `b` of piece `n` matched `sha` and is about to be written (the supernode seeding it): readers waiting for
   * it get its bytes now, and every later attempt at the piece must match `sha` (see `expectedBlocks`).
   */
  hashed(n: number, b: number, sha: string, data: readonly Buffer[]): void {
    if (this.#pieces.has(n) || this.#partial.get(n)?.[b] !== undefined) return;
    let promised = this.#promised.get(n);
    if (!promised) this.#promised.set(n, (promised = []));
    promised[b] = sha;
    this.emit('block:hashed', n, b, data);
  }

  /** What each block of piece `n` must hash to in the next attempt: verified on disk, or handed out from memory. */
  expectedBlocks(n: number): (string | undefined)[] {
    const partial = this.#partial.get(n);
    const promised = this.#promised.get(n);
    return Array.from({ length: blockCountFor(this.range(n).length) }, (_, b) => partial?.[b] ?? promised?.[b]);
  }

  /** Block `b` of piece `n`'s hash, once known: recorded, verified in flight, or handed out from memory. */
  blockSha(n: number, b: number): string | undefined {
    return this.#pieces.get(n)?.blocks[b] ?? this.#partial.get(n)?.[b] ?? this.#promised.get(n)?.[b];
  }

  /**
   * Every attempt at piece `n` failed: what they verified is forgotten, so a later one starts afresh (the origin's
   * object may have changed in between; readers of those blocks were cut with the failure).
   */
  forgetAttempts(n: number): void {
    this.#partial.delete(n);
    this.#promised.delete(n);
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
  async recordPiece(n: number, blocks: string[]): Promise<string> {
    // Two transfers of one piece (an endgame pair) may both finish: the piece is recorded, and announced, once.
    const had = this.#pieces.get(n);
    if (had) return had.root;
    // Removed (or replaced by a task of another version under the same id, in the same index): nothing is recorded.
    this.#assertOpen();
    await this.#index.putPiece(this.geometry.taskId, n, joinBlocks(blocks));
    // Closed while the record was written: not announced (a record left behind is re-hashed before use at start-up).
    this.#assertOpen();
    const root = pieceRoot(blocks);
    const raced = this.#pieces.get(n);
    if (raced) return raced.root;
    this.#pieces.set(n, { blocks, root });
    this.#partial.delete(n);
    this.#promised.delete(n);
    this.#checked.add(n);
    this.emit('piece:verified', n);
    return root;
  }

  /**
   * Runs `fn` with the data file open, from the store's bounded cache of open files: a piece served to a reader is read
   * through the handle its writes already opened, instead of an open and a close per answer (two thread-pool round
   * trips before a Range read's first byte).
   */
  async withFile<R>(fn: (fh: FileHandle) => Promise<R>): Promise<R> {
    // Reopened after the removal, the cache would keep a handle on the unlinked file under the path a new task of
    // the same id then gets.
    this.#assertOpen();
    return this.#handles.use(this.dataPath, fn);
  }

  /**
   * Makes sure piece `n` on disk is what its hash says: free for a piece this process wrote and hashed, one read-back
   * for one found on disk at start-up. A mismatch drops the piece (it is fetched again) and throws.
   */
  async ensureVerified(n: number): Promise<void> {
    const piece = this.#pieces.get(n);
    if (!piece) throw pieceError('PIECE_MISSING', `${this.geometry.taskId}#${n}`);
    if (this.#checked.has(n)) return;
    // Its path may hold another task's file now: never read back, nor dropped on what is there.
    this.#assertOpen();
    const { start, length } = this.range(n);
    try {
      await verifyStoredPiece(this.dataPath, start, length, piece.blocks, `${this.geometry.taskId}#${n}`);
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

  /** Forgets piece `n` (found bad on disk): it is fetched again, and the swarm is told (`piece:dropped`). */
  async dropPiece(n: number): Promise<void> {
    const had = this.#pieces.has(n);
    this.#pieces.delete(n);
    this.#partial.delete(n);
    this.#promised.delete(n);
    this.#checked.delete(n);
    // A removed task's records went with it; one of the same id since is another task's.
    if (this.#closed) return;
    await this.#index.deletePiece(this.geometry.taskId, n);
    if (had) this.emit('piece:dropped', n);
  }

  /** Resolves when piece `n` is present; rejects if the task fails or `signal` aborts. */
  waitPiece(n: number, { signal }: { signal?: AbortSignal } = {}): Promise<void> {
    // A task whose bytes were found not to be its digest's hands out nothing, not even pieces it still has on disk.
    if (this.#failure && isDigestMismatch(this.#failure)) return Promise.reject(this.#failure);
    if (this.#pieces.has(n)) return Promise.resolve();
    if (this.#failure) return Promise.reject(this.#failure);
    if (signal?.aborted) return Promise.reject(signal.reason);
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
  async waitBlock(n: number, b: number, { signal }: { signal?: AbortSignal } = {}): Promise<HeldBlock | undefined> {
    if (this.#failure && isDigestMismatch(this.#failure)) throw this.#failure;
    let data: HeldBlock | undefined;
    if (!this.hasBlock(n, b)) {
      if (this.#failure) throw this.#failure;
      signal?.throwIfAborted();
      data = await new Promise<HeldBlock | undefined>((resolve, reject) => {
        const cleanup = () => {
          this.off('block:verified', onBlock);
          this.off('block:hashed', onBlock);
          this.off('piece:verified', onPiece);
          this.off('task:failed', onFail);
          signal?.removeEventListener('abort', onAbort);
        };
        // The bytes are a pooled buffer, valid during the event only: held here, let go by the reader once sent.
        const onBlock = (m: number, c: number, bytes: (readonly Buffer[]) | undefined) => void (m === n && c === b && (cleanup(), resolve(bytes && holdBlock(bytes))));
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

  /** The download failed: wake every waiter with the error. A later download may try again. */
  fail(err: Error): void {
    this.#failure = err;
    this.emit('task:failed', err);
  }

  resetFailure(): void {
    this.#failure = undefined;
  }

  /**
   * The data file can no longer be trusted or written (it is shared with a file a user holds, and was changed):
   * nothing reads or writes it from now on, and the store removes the task (its own name of the file, its records),
   * so the next download starts a new file instead of repairing the user's.
   */
  detach(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.emit('task:detached');
  }

  /** A removed task (its id may be another task's now) touches neither the data file nor the index again. */
  #assertOpen(): void {
    if (this.#closed) throw pieceError('PIECE_MISSING', `${this.geometry.taskId}: removed`);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#handles.close(this.dataPath);
  }
}

export interface PieceStoreOptions<Meta extends object, T extends StoredTask<Meta>> {
  dataDir: string;
  geometry(meta: Meta): TaskGeometry;
  /** Builds a task object (a subclass can add what one daemon needs of its tasks). */
  make(init: StoredTaskInit<Meta>): T;
  /** Data files kept open at most (LRU, with leases). */
  openFiles?: number;
}

export interface PieceStoreEvents {
  /** A task left the store (GC, a failure, an operator), with the pieces it had: the swarm must stop counting on them. */
  'task:evicted': [string, number[]];
  /** A piece was dropped (found bad on disk, or of a task's other version): the swarm must stop counting on it. */
  'piece:dropped': [string, number];
}

/** What `chmod` answers where it cannot change a mode: not the owner, or a filesystem without modes (FUSE, SMB). */
const CHMOD_REFUSED = ['EPERM', 'EACCES', 'ENOTSUP', 'EOPNOTSUPP'];

export class PieceStore<Meta extends object, T extends StoredTask<Meta> = StoredTask<Meta>> extends EventEmitter<PieceStoreEvents> {
  /**
   * The store's own directories that `start` could not make this user's alone (to be logged): another user owns
   * them, or their group or others may enter them.
   */
  readonly exposed: string[] = [];
  readonly #o: PieceStoreOptions<Meta, T>;
  readonly #index: TaskIndex<Meta>;
  readonly #tasks = new Map<string, T>();
  readonly #handles: HandleCache;

  constructor(o: PieceStoreOptions<Meta, T>) {
    super();
    this.#o = o;
    this.#index = new TaskIndex<Meta>(join(o.dataDir, 'index'));
    this.#handles = new HandleCache(o.openFiles ?? 64);
  }

  /**
   * Opens the index and loads every task. `migrate` may rewrite a record from an older format (the rewrite is
   * persisted) and loads each task's piece records itself when given them.
   */
  async start(migrate?: (meta: Meta) => Meta | undefined): Promise<void> {
    // Blobs fetched with one client's credentials are cached here, and no local user may read them from disk that the
    // origin would not give them: the store's own directories are its user's alone, whatever mode they had before.
    // The data directory and its parents are the operator's (created with the usual mode if missing: a parent made
    // private here would shut out a daemon of another user beside this one).
    await mkdir(this.#o.dataDir, { recursive: true });
    this.exposed.length = 0;
    for (const own of ['tasks', 'index']) {
      const dir = join(this.#o.dataDir, own);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      try {
        await chmod(dir, 0o700);
      } catch (err) {
        // One another user owns (a pod run as another user since, its volume shared through its group), or on a
        // filesystem without modes, is used as it is; the daemon says so below.
        if (!CHMOD_REFUSED.includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
      }
      // Its owner reads its files whatever its mode (root's chmod succeeds on another user's directory, made in a
      // shared parent before the store's first start), and so do its group and others if it lets them in.
      const st = await stat(dir);
      if (!ownedHere(st.uid) || st.mode & 0o077) this.exposed.push(dir);
    }
    await this.#index.start();
    const orphans: string[] = [];
    for await (const [id, stored] of this.#index.tasks()) {
      // A record whose data file is gone (a removal on a full disk cut short, an operator's cleanup) has nothing to
      // serve: it goes, rather than become a task whose every read fails.
      if (!(await exists(this.dataPath(id)))) {
        orphans.push(id);
        continue;
      }
      const rewritten = migrate?.(stored);
      if (rewritten) await this.#index.putTask(id, rewritten);
      const meta = rewritten ?? stored;
      this.#adopt(meta, await this.#index.pieces(id));
    }
    // Left for the next start if the index cannot take it now (a disk still full): the task is not loaded either way.
    for (const id of orphans) await this.#index.deleteTask(id).catch(() => {});
    // A crash between a task's data file and its record (created: the file first; removed: the record first) leaves a
    // data file nothing accounts for: GC never sees it, and the disk it takes is lost for good. Such files go now.
    const dir = join(this.#o.dataDir, 'tasks');
    for (const name of await readdir(dir)) {
      const m = /^([a-f0-9]{64})\.data$/.exec(name);
      if (m && !this.#tasks.has(m[1]!)) await rm(join(dir, name), { force: true });
    }
  }

  async stop(): Promise<void> {
    await this.#handles.closeAll();
    this.#tasks.clear();
    await this.#index.stop();
  }

  get(taskId: string): T | undefined {
    return this.#tasks.get(taskId);
  }

  tasks(): IterableIterator<T> {
    return this.#tasks.values();
  }

  /** Creates a task: its data file sized up front (throws the filesystem's error, ENOSPC included), its record. */
  async create(meta: Meta): Promise<T> {
    const geometry = this.#o.geometry(meta);
    // A removal of the same task still under way would delete this one's file or record after they were made.
    await this.#removing.get(geometry.taskId)?.catch(() => {});
    const path = this.dataPath(geometry.taskId);
    const fh = await open(path, 'w');
    try {
      await fh.truncate(geometry.contentLength);
    } finally {
      await fh.close();
    }
    await this.#index.putTask(geometry.taskId, meta);
    return this.#adopt(meta, new Map());
  }

  /**
   * Deletes a task: record, piece records and data file. `replacing`: a new entry for the same task follows at once (its geometry changed), so
   * the node is not leaving the task's swarm and `task:evicted` is not emitted.
   */
  async remove(taskId: string, { replacing = false }: { replacing?: boolean } = {}): Promise<void> {
    const t = this.#tasks.get(taskId);
    const had = t?.present() ?? [];
    this.#tasks.delete(taskId);
    const before = this.#removing.get(taskId);
    const removal = (async () => {
      await before?.catch(() => {});
      if (t) await t.close();
      try {
        await this.#index.deleteTask(taskId);
      } catch (err) {
        // The record goes first, so that no record ever names a file that is gone; but on a full disk the index
        // cannot log even a deletion, and the space this removal is for would never come back: the file goes first
        // then, and the record after it, in the room it left (start-up drops a record whose file is gone).
        if (!isDiskFull(err)) throw err;
        await rm(this.dataPath(taskId), { force: true });
        await this.#index.deleteTask(taskId);
      }
      await rm(this.dataPath(taskId), { force: true });
    })();
    this.#removing.set(taskId, removal);
    try {
      await removal;
    } finally {
      if (this.#removing.get(taskId) === removal) this.#removing.delete(taskId);
      // Gone from memory whatever happened on disk (what a failed removal left there is found again at the next start):
      // the swarm must stop counting on it either way.
      if (t && !replacing) this.emit('task:evicted', taskId, had);
    }
  }

  /** Removals under way, by task: a new task of the same id is created only after. */
  readonly #removing = new Map<string, Promise<void>>();

  dataPath(taskId: string): string {
    return join(this.#o.dataDir, 'tasks', `${taskId}.data`);
  }

  /** Data files open right now (bounded by the handle cache). */
  get openFiles(): number {
    return this.#handles.size;
  }

  #adopt(meta: Meta, stored: Map<number, string>): T {
    const geometry = this.#o.geometry(meta);
    const task = this.#o.make({ meta, geometry, stored, dataPath: this.dataPath(geometry.taskId), index: this.#index, handles: this.#handles });
    task.on('piece:dropped', (n) => this.emit('piece:dropped', geometry.taskId, n));
    // Whatever the removal meets on disk, the task is gone from memory at once; what it leaves is found at the next start.
    task.once('task:detached', () => void (this.#tasks.get(geometry.taskId) === task && this.remove(geometry.taskId).catch(() => {})));
    this.#tasks.set(geometry.taskId, task);
    return task;
  }
}

/** Only a file that is not there counts as gone: any other failure to look (permissions, I/O) is thrown. */
async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
