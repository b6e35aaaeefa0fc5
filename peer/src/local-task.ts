/**
 * One task in the dfdaemon's cache: a task of the shared piece store (pieces, blocks in flight, waiters, leases,
 * events) plus what a downloading node adds: the task's `TaskInfo`, and whether the whole blob is complete and
 * matched its digest.
 */
import type { BigIntStats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { BLOCK_SIZE, StoredTask, isDamselflyError, pieceError, readCheckedBlock, serveCheckedRange, type BlockReady, type BufferPool, type StoredTaskInit, type TaskInfo } from '@damselfly/shared';

/**
 * The data file as it was when it was handed out (see `LocalTask.handOut`), as decimal strings: its size and mtime
 * (a write changes them; only the file's owner may set the mtime back), and its owner, group and mode (whoever is
 * given the file, or the right to write it, could write and set the mtime back).
 */
export interface HandedOut {
  size: string;
  mtimeNs: string;
  uid: string;
  gid: string;
  mode: string;
}

function stampOf(st: BigIntStats): HandedOut {
  return { size: String(st.size), mtimeNs: String(st.mtimeNs), uid: String(st.uid), gid: String(st.gid), mode: String(st.mode) };
}

function sameStamp(a: HandedOut, b: HandedOut): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.uid === b.uid && a.gid === b.gid && a.mode === b.mode;
}

export interface LocalTaskMeta {
  info: TaskInfo;
  url: string;
  /** All pieces present and the whole blob matched its digest (when one is known). */
  complete: boolean;
  lastAccess: number;
  /** Set once the data file was offered to a local client to link as its own file (dfget's output). */
  handedOut?: HandedOut;
}

/** Where a complete task's data file is, for a local client to link: device, inode, size and mtime pin the very file. */
export interface HandOut {
  path: string;
  dev: string;
  ino: string;
  size: number;
  mtimeNs: string;
}

export class LocalTask extends StoredTask<LocalTaskMeta> {
  readonly info: TaskInfo;
  /** Hand-outs whose client may not have linked the file yet (see `handOut`, `handedBack`). */
  #lent = 0;

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

  /**
   * A piece found bad on disk also makes the blob incomplete. In a file a user shares (handed out) it is not fetched
   * again into that file: the task goes, and the next download starts a file of its own.
   */
  override async dropPiece(n: number): Promise<void> {
    if (this.meta.handedOut) return this.detach();
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
   * The complete data file, offered to a local client to link as its own file (dfget's output) instead of having its
   * bytes sent and written a second time. From now on the file may change under this daemon's feet (the user edits
   * the output): it is stamped now, and every read checks the stamp first (see `ensureVerified`).
   */
  async handOut(): Promise<HandOut> {
    if (!this.meta.complete) throw pieceError('PIECE_MISSING', `${this.info.taskId}: not complete`);
    // Lent from here until `handedBack`: the file's one name does not mean nobody holds it while the client links it.
    this.#lent++;
    try {
      // Handed out before: only as it was then (a second client must not get a first one's changes as verified).
      const st = await this.#unchanged('its whole file');
      // One holder at a time: two clients' outputs that were one file would change together. A hand-out under way
      // counts as one (its client may not have linked the file yet).
      if (st.nlink > 1n || this.#lent > 1) throw pieceError('PIECE_MISSING', `${this.info.taskId}: its file is a local client's file too`);
      if (!this.meta.handedOut) await this.updateMeta({ handedOut: stampOf(st) });
      return { path: this.dataPath, dev: String(st.dev), ino: String(st.ino), size: Number(st.size), mtimeNs: String(st.mtimeNs) };
    } catch (err) {
      this.#lent--;
      throw err;
    }
  }

  /** The client of a `handOut` is done with it: it linked the file (or could not), and closed its answer. */
  handedBack(): void {
    this.#lent--;
  }

  /**
   * Whether the task is still this daemon's to use: false, the task detached, when its handed-out file was changed (or
   * cannot even be looked at). Asked before a cached task is served or built on, so that such a change is found before
   * an answer starts, not in the middle of it.
   */
  async intact(): Promise<boolean> {
    if (!this.meta.handedOut) return true;
    try {
      await this.#unchanged('its whole file');
      return true;
    } catch {
      this.detach();
      return false;
    }
  }

  /**
   * Whether the data file could be handed out now: not a local client's file already (its own name is its only one,
   * and no hand-out is under way).
   */
  async shareable(): Promise<boolean> {
    if (this.#lent > 0) return false;
    if (!this.meta.handedOut) return true;
    return (await this.withFile((fh) => fh.stat({ bigint: true }))).nlink === 1n;
  }

  /**
   * A handed-out file is read only while it is as it was handed out (see HandedOut): a write to it (the user's output
   * is the same file) changes its mtime, a chown or chmod its owner or mode, and then none of it is served again. Who
   * could set the mtime back (the file's owner, root) could write the cache directly anyway: dfget links only a file
   * its own user owns.
   */
  override async ensureVerified(n: number): Promise<void> {
    if (this.meta.handedOut) await this.#unchanged(`piece ${n}`);
    await super.ensureVerified(n);
  }

  /**
   * Block `b` of piece `n` of a handed-out file, read into memory and hashed before a byte of it is sent, to a client or
   * a peer. The file is the client's output too, written whenever its user likes: a stamp that matched a moment ago
   * says nothing of a write landing between that check and the read (or of one that set the mtime back), and what is
   * sent is exactly what matched the block's hash. A block that does not match detaches the task, as a changed stamp
   * does, and throws. The block is read into a buffer of `pool`, the caller's serving buffers.
   */
  async readHandedOut(n: number, b: number, opts: { pool: BufferPool; signal?: AbortSignal }): Promise<BlockReady> {
    const hashes = this.blocks(n);
    if (!hashes) throw pieceError('PIECE_MISSING', `${this.info.taskId}#${n}`);
    const { start, length } = this.range(n);
    const label = `${this.info.taskId}#${n} block ${b}`;
    try {
      return await this.withFile((fh) => readCheckedBlock(fh, start + b * BLOCK_SIZE, Math.min(BLOCK_SIZE, length - b * BLOCK_SIZE), hashes[b]!, `${this.info.taskId}#${n}`, opts));
    } catch (err) {
      throw this.#changed(err, label);
    }
  }

  /**
   * Bytes [from, to] of a complete, handed-out file, as readHandedOut checks them but in reads of the pool's buffer
   * size (a block at a time ran at a third of the speed of an unchecked answer): each block hashed before any of it
   * is written, each piece's stamp checked before it is read.
   */
  async serveHandedOut(fh: FileHandle, from: number, to: number, out: Writable, o: { pool: BufferPool; signal?: AbortSignal; onBytes?: (n: number) => void }): Promise<void> {
    const { pieceSize, contentLength } = this.info;
    const perPiece = pieceSize / BLOCK_SIZE;
    try {
      await serveCheckedRange(fh, from, to, out, {
        ...o,
        size: contentLength,
        pieceSize,
        label: this.info.taskId,
        blockSha: (k) => this.blocks(Math.floor(k / perPiece))?.[k % perPiece],
        enterPiece: (n) => this.ensureVerified(n),
      });
    } catch (err) {
      throw this.#changed(err, this.info.taskId);
    }
  }

  /** A handed-out file's bytes found not to be what was handed out: the task is let go, as for a changed stamp. */
  #changed(err: unknown, label: string): unknown {
    if (!isDamselflyError(err, 'PIECE_CORRUPT') && !isDamselflyError(err, 'PIECE_SHORT')) return err;
    this.detach();
    return pieceError('PIECE_MISSING', `${label}: its file, shared with a local client's, was changed since it was handed out`, err);
  }

  /**
   * The data file's stat, if it is as it was handed out (when it was); otherwise the task is detached and this throws.
   * The stamp stays for good, even once the file has the daemon's name only again (the output deleted, or never
   * linked): a program may still hold it open for writing, and a client may link it late (after a restart, which
   * forgets what was lent); an fstat per read is what it costs.
   */
  async #unchanged(what: string): Promise<BigIntStats> {
    const st = await this.withFile((fh) => fh.stat({ bigint: true }));
    const stamp = this.meta.handedOut;
    if (stamp && !sameStamp(stamp, stampOf(st))) {
      this.detach();
      throw pieceError('PIECE_MISSING', `${this.info.taskId} (${what}): its file, shared with a local client's, was changed since it was handed out`);
    }
    return st;
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
