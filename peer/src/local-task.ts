/**
 * One task in the dfdaemon's cache: a task of the shared piece store (pieces, blocks in flight, waiters, leases,
 * events) plus what a downloading node adds: the task's `TaskInfo`, and whether the whole blob is complete and
 * matched its digest.
 */
import { StoredTask, type StoredTaskInit, type TaskInfo } from '@damselfly/shared';

export interface LocalTaskMeta {
  info: TaskInfo;
  url: string;
  /** All pieces present and the whole blob matched its digest (when one is known). */
  complete: boolean;
  lastAccess: number;
}

export class LocalTask extends StoredTask<LocalTaskMeta> {
  readonly info: TaskInfo;

  constructor(init: StoredTaskInit<LocalTaskMeta>) {
    super(init);
    this.info = init.meta.info;
  }

  get complete(): boolean {
    return this.meta.complete;
  }
  get lastAccess(): number {
    return this.meta.lastAccess;
  }

  /** A piece found bad on disk also makes the blob incomplete. */
  override async dropPiece(n: number): Promise<void> {
    await super.dropPiece(n);
    if (this.meta.complete) await this.updateMeta({ complete: false });
  }

  /** Resolves when the whole task is complete and verified. */
  waitComplete({ signal }: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.meta.complete) return Promise.resolve();
    if (this.failure) return Promise.reject(this.failure);
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
    await this.updateMeta({ complete: true });
    this.resetFailure();
    this.emit('task:completed');
  }

  /**
   * Marks the task used now. GC reads the time from memory, which changes at once; the record on disk only orders the
   * cache after a restart, so it is written behind, never on a reader's path (awaited, it held a Range read's first
   * byte back by a database write, 0.3-3.7 ms). A write that fails leaves the older time there until the next touch.
   */
  touch(): void {
    this.updateMeta({ lastAccess: Date.now() }).catch(() => {});
  }
}
