/**
 * Seeded pieces on the supernode's disk: one data file per task plus the level index of piece hashes.
 * In-memory maps mirror the index so the hot path (is piece n seeded? what is its hash?) never awaits level.
 */
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { HandleCache, TaskIndex, canonicalUrl, joinBlocks, pieceRange, pieceRoot, splitBlocks, verifyStoredPiece } from '@damselfly/shared';
import { snError } from '../errors.js';
import type { TaskMeta } from './task-meta.js';

/** A seeded piece: its block hashes and their root (the piece's identity). */
interface Seeded {
  blocks: string[];
  root: string;
}

interface OpenTask {
  meta: TaskMeta;
  pieces: Map<number, Seeded>;
  /** Pieces this process hashed itself (seeded, or checked on a read); the rest are re-hashed when read. */
  checked: Set<number>;
  /** Last registration, seeded piece or served piece (ms); GC evicts the least recent first. */
  lastAccess: number;
  /** Piece reads in progress: GC never evicts a task being served. */
  readers: number;
}

export class TaskStore {
  readonly #dir: string;
  readonly #index: TaskIndex<TaskMeta>;
  readonly #tasks = new Map<string, OpenTask>();
  readonly #handles = new HandleCache(128);

  constructor(dataDir: string) {
    this.#dir = dataDir;
    this.#index = new TaskIndex<TaskMeta>(join(dataDir, 'index'));
  }

  async start(): Promise<void> {
    await mkdir(join(this.#dir, 'tasks'), { recursive: true });
    await this.#index.start();
    for await (const [id, meta] of this.#index.tasks()) {
      // Records from before origins were stored canonically may hold a URL with credentials: rewrite them without.
      const legacy = meta as TaskMeta & { url?: string };
      if (legacy.url !== undefined || legacy.origin === undefined) {
        const { url, ...rest } = legacy;
        Object.assign(rest, { origin: url ? canonicalUrl(new URL(url)) : '' });
        await this.#index.putTask(id, rest as TaskMeta);
        this.#tasks.set(id, { meta: rest as TaskMeta, pieces: await this.#loadPieces(rest as TaskMeta), checked: new Set(), lastAccess: legacy.createdAt, readers: 0 });
        continue;
      }
      this.#tasks.set(id, { meta, pieces: await this.#loadPieces(meta), checked: new Set(), lastAccess: meta.lastAccess ?? meta.createdAt, readers: 0 });
    }
  }

  /** Piece records of a task; one that is not a block list of the right length (an older format) is seeded again. */
  async #loadPieces(meta: TaskMeta): Promise<Map<number, Seeded>> {
    const out = new Map<number, Seeded>();
    for (const [n, stored] of await this.#index.pieces(meta.taskId)) {
      const { start, end } = pieceRange(n, meta.pieceSize, meta.contentLength);
      const blocks = n < meta.pieceCount ? splitBlocks(stored, end - start + 1) : undefined;
      if (blocks) out.set(n, { blocks, root: pieceRoot(blocks) });
      else await this.#index.deletePiece(meta.taskId, n);
    }
    return out;
  }

  async stop(): Promise<void> {
    await this.#handles.closeAll();
    this.#tasks.clear();
    await this.#index.stop();
  }

  get(taskId: string): TaskMeta | undefined {
    return this.#tasks.get(taskId)?.meta;
  }

  async create(meta: TaskMeta): Promise<void> {
    const fh = await open(this.dataPath(meta.taskId), 'w');
    try {
      await fh.truncate(meta.contentLength);
    } finally {
      await fh.close();
    }
    await this.#index.putTask(meta.taskId, meta);
    this.#tasks.set(meta.taskId, { meta, pieces: new Map(), checked: new Set(), lastAccess: Date.now(), readers: 0 });
  }

  /** Changes and persists part of a task's record. */
  async update(taskId: string, patch: Partial<TaskMeta>): Promise<void> {
    const t = this.#tasks.get(taskId);
    if (!t) return;
    Object.assign(t.meta, patch);
    await this.#index.putTask(taskId, t.meta);
  }

  /** Deletes a task: record, piece hashes and data file. */
  async remove(taskId: string): Promise<void> {
    const t = this.#tasks.get(taskId);
    this.#tasks.delete(taskId);
    if (t) await this.#handles.close(this.dataPath(taskId));
    await this.#index.deleteTask(taskId);
    await rm(this.dataPath(taskId), { force: true });
  }

  /** A peer registered for the task: it counts as used (persisted, so the TTL survives a restart). */
  async touch(taskId: string, now = Date.now()): Promise<void> {
    const t = this.#tasks.get(taskId);
    if (!t) return;
    t.lastAccess = now;
    // One write per registration at most once a minute: enough for a TTL counted in days.
    if (now - (t.meta.lastAccess ?? 0) > 60_000) await this.update(taskId, { lastAccess: now });
  }

  /** What GC weighs per task: seeded bytes, last use, whether a piece is being read now. */
  *entries(): Generator<{ taskId: string; bytes: number; lastAccess: number; reading: boolean }> {
    for (const [taskId, t] of this.#tasks) {
      let bytes = 0;
      for (const n of t.pieces.keys()) {
        const { start, end } = pieceRange(n, t.meta.pieceSize, t.meta.contentLength);
        bytes += end - start + 1;
      }
      yield { taskId, bytes, lastAccess: t.lastAccess, reading: t.readers > 0 };
    }
  }

  /** The piece's identity (root of its block hashes), once seeded. */
  pieceSha(taskId: string, n: number): string | undefined {
    return this.#tasks.get(taskId)?.pieces.get(n)?.root;
  }

  /** The piece's block hashes, once seeded. */
  pieceBlocks(taskId: string, n: number): string[] | undefined {
    return this.#tasks.get(taskId)?.pieces.get(n)?.blocks;
  }

  seededCount(taskId: string): number {
    return this.#tasks.get(taskId)?.pieces.size ?? 0;
  }

  dataPath(taskId: string): string {
    return join(this.#dir, 'tasks', `${taskId}.data`);
  }

  /** Runs `fn` with the task's data file open for writing (kept open while busy, from a bounded cache). */
  async withHandle<T>(taskId: string, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
    if (!this.#tasks.has(taskId)) throw snError('SN_TASK_NOT_FOUND', taskId);
    return this.#handles.use(this.dataPath(taskId), fn);
  }

  /** Data files open right now (bounded by the handle cache). */
  get openFiles(): number {
    return this.#handles.size;
  }

  /** Records a seeded piece by its block hashes; returns its root. */
  async recordPiece(taskId: string, n: number, blocks: string[]): Promise<string> {
    await this.#index.putPiece(taskId, n, joinBlocks(blocks));
    const root = pieceRoot(blocks);
    const t = this.#tasks.get(taskId);
    t?.pieces.set(n, { blocks, root });
    t?.checked.add(n);
    if (t) t.lastAccess = Date.now();
    return root;
  }

  /** Where piece `n` lies in its data file (for a piece being seeded, whose blocks are served as they land). */
  pieceLocation(taskId: string, n: number): { path: string; start: number; end: number } {
    const t = this.#tasks.get(taskId);
    if (!t) throw snError('SN_TASK_NOT_FOUND', taskId);
    const { start, end } = pieceRange(n, t.meta.pieceSize, t.meta.contentLength);
    return { path: this.dataPath(taskId), start, end };
  }

  /** The task counts as being read (GC leaves it alone) until the returned function is called. */
  hold(taskId: string): () => void {
    const t = this.#tasks.get(taskId);
    if (!t) return () => {};
    t.readers++;
    t.lastAccess = Date.now();
    let released = false;
    return () => {
      if (!released) t.readers--;
      released = true;
    };
  }

  /**
   * Where piece `n` lies in its data file, checked against its recorded hash first if this process did not hash it
   * itself (a disk error never reaches a peer as data; the bad piece is forgotten and seeded again). The task counts
   * as being read (GC leaves it alone) until `done` is called.
   */
  async servePiece(taskId: string, n: number): Promise<{ path: string; start: number; end: number; blocks: string[]; done: () => void }> {
    const t = this.#tasks.get(taskId);
    const seeded = t?.pieces.get(n);
    if (!t || !seeded) throw snError('SN_TASK_NOT_FOUND', `${taskId}#${n}`);
    const { start, end } = pieceRange(n, t.meta.pieceSize, t.meta.contentLength);
    t.readers++;
    t.lastAccess = Date.now();
    let released = false;
    const done = () => {
      if (!released) t.readers--;
      released = true;
    };
    try {
      if (!t.checked.has(n)) {
        try {
          await verifyStoredPiece(this.dataPath(taskId), start, end - start + 1, seeded.blocks, `${taskId}#${n}`);
          t.checked.add(n);
        } catch (err) {
          t.pieces.delete(n);
          t.checked.delete(n);
          await this.#index.deletePiece(taskId, n);
          throw err;
        }
      }
      return { path: this.dataPath(taskId), start, end, blocks: seeded.blocks, done };
    } catch (err) {
      done();
      throw err;
    }
  }
}
