/**
 * The dfdaemon piece cache: `<dataDir>/tasks/<taskId>.data` per task plus a level index of verified pieces. On start
 * it reloads the index, so a restart finds every verified piece again; pieces are re-checked whenever they are read.
 */
import { EventEmitter } from 'node:events';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { HandleCache, TaskIndex, canonicalUrl, type TaskInfo } from '@damselfly/shared';
import { LocalTask, type LocalTaskMeta } from './local-task.js';
import { dfError } from '../errors.js';

export interface LocalStoreEvents {
  /** A task left the cache (GC, a failure, an operator): the swarm must stop counting on it. */
  'task:evicted': [string];
  /** A piece was found bad on disk and dropped. */
  'piece:dropped': [string, number];
}

export class LocalStore extends EventEmitter<LocalStoreEvents> {
  readonly #dir: string;
  readonly #index: TaskIndex<LocalTaskMeta>;
  readonly #tasks = new Map<string, LocalTask>();
  readonly #handles = new HandleCache(64);

  constructor(dataDir: string) {
    super();
    this.#dir = dataDir;
    this.#index = new TaskIndex<LocalTaskMeta>(join(dataDir, 'index'));
  }

  async start(): Promise<void> {
    await mkdir(join(this.#dir, 'tasks'), { recursive: true });
    await this.#index.start();
    for await (const [id, meta] of this.#index.tasks()) {
      // Records written before URLs were stored canonically may hold credentials: rewrite them without.
      const url = canonicalUrl(new URL(meta.url));
      if (url !== meta.url) await this.#index.putTask(id, { ...meta, url });
      this.#tasks.set(id, new LocalTask({ ...meta, url }, await this.#index.pieces(id), this.#dataPath(id), this.#index, this.#handles, (n) => this.emit('piece:dropped', id, n)));
    }
  }

  async stop(): Promise<void> {
    await this.#handles.closeAll();
    this.#tasks.clear();
    await this.#index.stop();
  }

  tasks(): IterableIterator<LocalTask> {
    return this.#tasks.values();
  }

  get(taskId: string): LocalTask | undefined {
    return this.#tasks.get(taskId);
  }

  /** Opens (creating if needed) the cache entry for a task; the data file is sized up front. `url` is stored: no credentials. */
  async open(info: TaskInfo, url: string): Promise<LocalTask> {
    const existing = this.#tasks.get(info.taskId);
    if (existing && existing.info.contentLength === info.contentLength && existing.info.pieceSize === info.pieceSize) return existing;
    if (existing) await this.remove(info.taskId);
    const meta: LocalTaskMeta = { info, url, complete: false, lastAccess: Date.now() };
    const path = this.#dataPath(info.taskId);
    try {
      const fh = await open(path, 'w');
      await fh.truncate(info.contentLength);
      await fh.close();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw dfError('DF_DISK_FULL', path, err);
      throw err;
    }
    await this.#index.putTask(info.taskId, meta);
    const task = new LocalTask(meta, new Map(), path, this.#index, this.#handles, (n) => this.emit('piece:dropped', info.taskId, n));
    this.#tasks.set(info.taskId, task);
    return task;
  }

  async remove(taskId: string): Promise<void> {
    const t = this.#tasks.get(taskId);
    this.#tasks.delete(taskId);
    await t?.close();
    await this.#index.deleteTask(taskId);
    await rm(this.#dataPath(taskId), { force: true });
    if (t) this.emit('task:evicted', taskId);
  }

  #dataPath(taskId: string): string {
    return join(this.#dir, 'tasks', `${taskId}.data`);
  }
}
