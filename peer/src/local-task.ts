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

  async touch(): Promise<void> {
    await this.updateMeta({ lastAccess: Date.now() });
  }
}
