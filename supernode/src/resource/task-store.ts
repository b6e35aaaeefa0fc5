/**
 * Seeded pieces on the supernode's disk: the shared piece store (one data file per task plus the level index of
 * block hashes), seen through what the seeder, the scheduler and the piece API ask of it. Lookups on the hot path (is
 * piece n seeded? its hashes?) are in memory and never await level.
 */
import type { FileHandle } from 'node:fs/promises';
import { PieceStore, StoredTask, displayUrl, pieceRange, type BlockReady } from '@damselfly/shared';
import { snError } from '../errors.js';
import type { TaskMeta } from './task-meta.js';

export class TaskStore {
  readonly #store: PieceStore<TaskMeta>;
  /** Last registration, seeded piece or served piece (ms); GC evicts the least recent first. */
  readonly #lastAccess = new Map<string, number>();

  constructor(dataDir: string) {
    this.#store = new PieceStore<TaskMeta>({ dataDir, geometry: (meta) => meta, make: (init) => new StoredTask(init), openFiles: 128 });
  }

  /** See PieceStore.exposed. */
  get exposed(): readonly string[] {
    return this.#store.exposed;
  }

  async start(): Promise<void> {
    await this.#store.start((meta) => {
      // Records from before origins were stored canonically may hold a URL with credentials: rewrite them without.
      const legacy = meta as TaskMeta & { url?: string };
      if (legacy.url === undefined && legacy.origin !== undefined) return undefined;
      const { url, ...rest } = legacy;
      return { ...rest, origin: url ? displayUrl(new URL(url)) : '' } as TaskMeta;
    });
    for (const t of this.#store.tasks()) this.#lastAccess.set(t.geometry.taskId, t.meta.lastAccess ?? t.meta.createdAt);
  }

  async stop(): Promise<void> {
    this.#lastAccess.clear();
    await this.#store.stop();
  }

  /** Every task on disk (for the dashboard). */
  list(): TaskMeta[] {
    return [...this.#store.tasks()].map((t) => t.meta as TaskMeta);
  }

  /** Last use of a task (ms). */
  lastAccess(taskId: string): number {
    return this.#lastAccess.get(taskId) ?? 0;
  }

  get(taskId: string): TaskMeta | undefined {
    return this.#store.get(taskId)?.meta as TaskMeta | undefined;
  }

  async create(meta: TaskMeta): Promise<void> {
    await this.#store.create(meta);
    this.#lastAccess.set(meta.taskId, Date.now());
  }

  /** Changes and persists part of a task's record (the object `get` returns reflects it). */
  async update(taskId: string, patch: Partial<TaskMeta>): Promise<void> {
    const t = this.#store.get(taskId);
    if (!t) return;
    await t.updateMeta(patch);
  }

  /** Deletes a task: record, piece hashes and data file. */
  async remove(taskId: string): Promise<void> {
    this.#lastAccess.delete(taskId);
    await this.#store.remove(taskId);
  }

  /** A peer registered for the task: it counts as used (persisted, so the TTL survives a restart). */
  async touch(taskId: string, now = Date.now()): Promise<void> {
    const t = this.#store.get(taskId);
    if (!t) return;
    this.#lastAccess.set(taskId, now);
    // One write per registration at most once a minute: enough for a TTL counted in days.
    if (now - (t.meta.lastAccess ?? 0) > 60_000) await this.update(taskId, { lastAccess: now });
  }

  /** What GC weighs per task: seeded bytes and last use (whether it is in use, GC asks `pieces(taskId)`). */
  *entries(): Generator<{ taskId: string; bytes: number; lastAccess: number }> {
    for (const t of this.#store.tasks()) {
      let bytes = 0;
      for (const n of t.present()) bytes += t.range(n).length;
      const taskId = t.geometry.taskId;
      yield { taskId, bytes, lastAccess: this.#lastAccess.get(taskId) ?? 0 };
    }
  }

  /**
   * The task's pieces in the shared store: where seeding reports each block (`hashed`, `landed`), and where readers
   * wait for one (`waitBlock`) while its piece is still arriving. Undefined once the task is gone.
   */
  pieces(taskId: string): StoredTask<TaskMeta> | undefined {
    return this.#store.get(taskId);
  }

  /**
   * Resolves when block `b` of piece `n` may be sent, with its hash and, when it landed during the wait, its bytes;
   * rejects when `signal` aborts (the seeding failed, or the reader left).
   */
  async waitBlock(taskId: string, n: number, b: number, signal: AbortSignal): Promise<BlockReady> {
    const t = this.pieces(taskId);
    if (!t) throw snError('SN_TASK_NOT_FOUND', taskId);
    const got = await t.waitBlock(n, b, { signal });
    const sha = t.blockSha(n, b);
    if (sha === undefined) throw snError('SN_TASK_NOT_FOUND', `${taskId}#${n} block ${b}`);
    return { sha, ...got };
  }

  /** The piece's identity (root of its block hashes), once seeded. */
  pieceSha(taskId: string, n: number): string | undefined {
    return this.#store.get(taskId)?.sha(n);
  }

  /** The piece's block hashes, once seeded. */
  pieceBlocks(taskId: string, n: number): string[] | undefined {
    return this.#store.get(taskId)?.blocks(n);
  }

  seededCount(taskId: string): number {
    return this.#store.get(taskId)?.presentCount ?? 0;
  }

  dataPath(taskId: string): string {
    return this.#store.dataPath(taskId);
  }

  /** Runs `fn` with the task's data file open for reading and writing (kept open while busy, from a bounded cache). */
  async withHandle<T>(taskId: string, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
    const t = this.#store.get(taskId);
    if (!t) throw snError('SN_TASK_NOT_FOUND', taskId);
    return t.withFile(fn);
  }

  /** Data files open right now (bounded by the handle cache). */
  get openFiles(): number {
    return this.#store.openFiles;
  }

  /** Records a seeded piece by its block hashes; returns its root. */
  async recordPiece(taskId: string, n: number, blocks: string[]): Promise<string> {
    const t = this.#store.get(taskId);
    if (!t) throw snError('SN_TASK_NOT_FOUND', taskId);
    this.#lastAccess.set(taskId, Date.now());
    return t.recordPiece(n, blocks);
  }

  /** Resolves when piece `n` is recorded (at once if it is), or when `signal` aborts (the listener goes with it). */
  recorded(taskId: string, n: number, signal: AbortSignal): Promise<void> {
    const t = this.#store.get(taskId);
    if (!t || t.has(n) || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        t.off('piece:verified', on);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const on = (m: number) => void (m === n && done());
      t.on('piece:verified', on);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Where piece `n` lies in its data file (for a piece being seeded, whose blocks are served as they land). */
  pieceLocation(taskId: string, n: number): { path: string; start: number; end: number } {
    const t = this.#store.get(taskId);
    if (!t) throw snError('SN_TASK_NOT_FOUND', taskId);
    const { start, end } = pieceRange(n, t.geometry.pieceSize, t.geometry.contentLength);
    return { path: this.dataPath(taskId), start, end };
  }

  /** The task counts as being read (GC leaves it alone) until the returned function is called. */
  hold(taskId: string): () => void {
    const t = this.#store.get(taskId);
    if (!t) return () => {};
    this.#lastAccess.set(taskId, Date.now());
    return t.lease();
  }

  /**
   * Where piece `n` lies in its data file, checked against its recorded block hashes first if this process did not
   * hash it itself (a disk error never reaches a peer as data; the bad piece is forgotten and seeded again). The task
   * counts as being read (GC leaves it alone) until `done` is called.
   */
  async servePiece(taskId: string, n: number): Promise<{ path: string; start: number; end: number; blocks: string[]; done: () => void }> {
    const t = this.#store.get(taskId);
    const blocks = t?.blocks(n);
    if (!t || !blocks) throw snError('SN_TASK_NOT_FOUND', `${taskId}#${n}`);
    const done = this.hold(taskId);
    try {
      const { start, end } = await t.pieceExtent(n);
      return { path: this.dataPath(taskId), start, end, blocks, done };
    } catch (err) {
      done();
      throw err;
    }
  }
}
