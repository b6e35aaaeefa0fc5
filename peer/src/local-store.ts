/**
 * The dfdaemon piece cache: the shared piece store (`<dataDir>/tasks/<taskId>.data` per task plus a level index of
 * verified pieces) holding `LocalTask`s. On start it reloads the index, so a restart finds every verified piece again;
 * pieces are re-checked whenever they are read.
 */
import { PieceStore, displayUrl, isDiskFull, type TaskInfo } from '@damselfly/shared';
import { LocalTask, type LocalTaskMeta } from './local-task.js';
import { peerError } from './errors.js';

export class LocalStore extends PieceStore<LocalTaskMeta, LocalTask> {
  constructor(dataDir: string) {
    super({ dataDir, geometry: (meta) => meta.info, make: (init) => new LocalTask(init) });
  }

  override async start(): Promise<void> {
    // Records written before URLs were stored canonically may hold credentials: rewrite them without.
    await super.start((meta) => {
      const url = displayUrl(new URL(meta.url));
      return url === meta.url ? undefined : { ...meta, url };
    });
  }

  /** The cached task, unless it may not be used any more (a handed-out file that was changed: detached, and going). */
  async current(taskId: string): Promise<LocalTask | undefined> {
    const t = this.get(taskId);
    return t && (await t.intact()) ? t : undefined;
  }

  /** Opens (creating if needed) the cache entry for a task; the data file is sized up front. `url` is stored: no credentials. */
  async open(info: TaskInfo, url: string): Promise<LocalTask> {
    const existing = await this.current(info.taskId);
    if (existing && sameObject(existing.info, info)) return existing;
    // Cut another way (pieces cached by a supernode with another piece-size rule, or fetched from the origin while no
    // supernode answered), or of another version of an object without a digest: those pieces cannot be matched against
    // this task's hashes, or are of other bytes, so they are dropped. The node stays in the task (it has just
    // registered for it), so the supernode is not told it left; but it is told each piece is gone (it accepted those
    // whose hash matched its record: a piece a new version kept as it was would otherwise be counted on here).
    if (existing) {
      const had = existing.present();
      await this.remove(info.taskId, { replacing: true });
      for (const n of had) this.emit('piece:dropped', info.taskId, n);
    }
    try {
      return await this.create({ info, url, complete: false, lastAccess: Date.now() });
    } catch (err) {
      if (isDiskFull(err)) throw peerError('DF_DISK_FULL', this.dataPath(info.taskId), err);
      throw err;
    }
  }
}

/**
 * Pieces kept under `kept` can be built on for `now`: the same cut and, without a digest to hold the blob to, the same
 * version. An object whose origin sends no ETag has no version to compare: its pieces are kept, as the supernode keeps
 * its own.
 */
export function sameObject(kept: TaskInfo, now: TaskInfo): boolean {
  return kept.contentLength === now.contentLength && kept.pieceSize === now.pieceSize && (now.digest !== undefined || kept.validator === now.validator);
}
