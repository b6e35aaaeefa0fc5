/**
 * Open data files, bounded: a task's file is opened when a piece is written and stays open while it is busy, but at
 * most `max` idle ones are kept (least recently used closed first), so a node that has seen thousands of tasks never
 * runs out of descriptors. A handle in use is never closed under its user, except by `close(path)` (the task is
 * being removed).
 */
import { open, type FileHandle } from 'node:fs/promises';

interface Entry {
  fh: Promise<FileHandle>;
  leases: number;
}

export class HandleCache {
  readonly #max: number;
  /** Insertion order is recency: an entry is re-inserted on every use. */
  readonly #entries = new Map<string, Entry>();

  constructor(max = 64) {
    this.#max = max;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Runs `fn` with the file at `path` open for reading and writing. */
  async use<T>(path: string, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
    let e = this.#entries.get(path);
    if (e) this.#entries.delete(path);
    else e = { fh: open(path, 'r+'), leases: 0 };
    this.#entries.set(path, e);
    e.leases++;
    try {
      let fh: FileHandle;
      try {
        fh = await e.fh;
      } catch (err) {
        if (this.#entries.get(path) === e) this.#entries.delete(path);
        throw err;
      }
      return await fn(fh);
    } finally {
      e.leases--;
      this.#trim();
    }
  }

  /** Closes the file now (its task is going away). */
  async close(path: string): Promise<void> {
    const e = this.#entries.get(path);
    if (!e) return;
    this.#entries.delete(path);
    await e.fh.then((fh) => fh.close()).catch(() => {});
  }

  async closeAll(): Promise<void> {
    const all = [...this.#entries.values()];
    this.#entries.clear();
    await Promise.all(all.map((e) => e.fh.then((fh) => fh.close()).catch(() => {})));
  }

  #trim(): void {
    if (this.#entries.size <= this.#max) return;
    for (const [path, e] of this.#entries) {
      if (this.#entries.size <= this.#max) break;
      if (e.leases > 0) continue;
      this.#entries.delete(path);
      void e.fh.then((fh) => fh.close()).catch(() => {});
    }
  }
}
