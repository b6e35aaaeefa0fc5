/**
 * The embedded metadata store both the supernode and dfdaemon keep beside their data files: per task a JSON record,
 * per verified piece its sha256. A piece key is written only after its bytes were written (not necessarily flushed);
 * every piece found here at start-up is re-hashed before it is first used, so a piece whose bytes did not reach the
 * disk before a crash is found and fetched again, never served.
 */
import { Level } from 'level';
import { errorFactory, type ErrorTable } from './errors.js';
import { noRoomOn } from './disk-full.js';

export const IndexErrors = {
  INDEX_DISK_FULL: { message: 'no space left writing the task index: %s', status: 507 },
} as const satisfies ErrorTable<string>;

const indexError = errorFactory(IndexErrors);

const pieceKey = (taskId: string, n: number) => `piece:${taskId}:${n.toString().padStart(8, '0')}`;

/** A failing index is reopened at most this often: a disk that fails every write is not reopened in a loop. */
const REOPEN_EVERY_MS = 5_000;

export class TaskIndex<Meta> {
  readonly #db: Level<string, string>;
  readonly #path: string;
  /** A reopen under way: operations wait for it rather than meet a closed database. */
  #reopening?: Promise<void>;
  #reopenedAt = -Infinity;
  /** Reopens so far: an operation that failed across one is made again without waiting for another. */
  #generation = 0;
  /** Database operations in flight: a reopen lets them finish before it closes the database under them. */
  readonly #inFlight = new Set<Promise<unknown>>();
  #stopped = false;

  constructor(path: string) {
    this.#path = path;
    this.#db = new Level<string, string>(path, { valueEncoding: 'utf8' });
  }

  /** How many times the database was reopened after failing (see #write). */
  get reopens(): number {
    return this.#generation;
  }

  #track<T>(op: Promise<T>): Promise<T> {
    this.#inFlight.add(op);
    const done = () => this.#inFlight.delete(op);
    op.then(done, done);
    return op;
  }

  /**
   * A write that failed on a full disk says so (see disk-full.ts). One that fails while the disk has room is made
   * once more after a reopen: LevelDB keeps a failed background compaction's error (a full disk while it wrote a table
   * file) and fails every later write with it until it is reopened, so without this a node whose disk once filled
   * could record no piece again until restarted; and a reopen that could not open leaves it closed until the next.
   * Only LevelDB's own I/O and not-open errors are judged so; anything else, or anything once stopping, is passed on.
   */
  async #write(what: string, fn: () => Promise<void>): Promise<void> {
    await this.#reopening;
    const seen = this.#generation;
    try {
      await this.#track(fn());
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (this.#stopped || (code !== 'LEVEL_IO_ERROR' && code !== 'LEVEL_DATABASE_NOT_OPEN')) throw err;
      if (code === 'LEVEL_IO_ERROR' && this.#generation === seen && (await noRoomOn(this.#path))) {
        throw indexError('INDEX_DISK_FULL', `${what} (${this.#path})`, err);
      }
      if (!(await this.#reopen(seen))) throw err;
      await this.#track(fn());
    }
  }

  /**
   * Closes and opens the database again, unless it was reopened since `seen` (then the caller just tries again) or
   * moments ago; true if it was, or is being, reopened.
   */
  async #reopen(seen: number): Promise<boolean> {
    if (this.#reopening || this.#generation !== seen) {
      await this.#reopening;
      return true;
    }
    const now = performance.now();
    if (now - this.#reopenedAt < REOPEN_EVERY_MS) return false;
    this.#reopenedAt = now;
    this.#generation++;
    this.#reopening = (async () => {
      await Promise.allSettled([...this.#inFlight]);
      if (this.#db.status === 'open') await this.#db.close();
      await this.#db.open();
    })().finally(() => (this.#reopening = undefined));
    await this.#reopening;
    return true;
  }

  async start(): Promise<void> {
    await this.#db.open();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#reopening?.catch(() => {});
    await this.#db.close();
  }

  async getTask(taskId: string): Promise<Meta | undefined> {
    const v = await this.#db.get(`task:${taskId}`);
    return v === undefined ? undefined : (JSON.parse(v) as Meta);
  }

  async putTask(taskId: string, meta: Meta): Promise<void> {
    await this.#write(`task ${taskId}`, () => this.#db.put(`task:${taskId}`, JSON.stringify(meta)));
  }

  /** Removes a task and all its piece records. */
  async deleteTask(taskId: string): Promise<void> {
    // The scan and the batch as one operation, made again whole for a second try (see #write): a reopen never closes
    // the scan's iterator under it.
    await this.#write(`removal of task ${taskId}`, async () => {
      const keys: string[] = [];
      for await (const key of this.#db.keys({ gte: `piece:${taskId}:`, lt: `piece:${taskId};` })) keys.push(key);
      keys.push(`task:${taskId}`);
      await this.#db.batch(keys.map((key) => ({ type: 'del' as const, key })));
    });
  }

  async *tasks(): AsyncGenerator<[string, Meta]> {
    for await (const [k, v] of this.#db.iterator({ gte: 'task:', lt: 'task;' })) yield [k.slice(5), JSON.parse(v) as Meta];
  }

  async pieces(taskId: string): Promise<Map<number, string>> {
    const out = new Map<number, string>();
    for await (const [k, v] of this.#db.iterator({ gte: `piece:${taskId}:`, lt: `piece:${taskId};` })) {
      out.set(Number(k.slice(k.lastIndexOf(':') + 1)), v);
    }
    return out;
  }

  async putPiece(taskId: string, n: number, sha256: string): Promise<void> {
    await this.#write(`piece ${n} of task ${taskId}`, () => this.#db.put(pieceKey(taskId, n), sha256));
  }

  async deletePiece(taskId: string, n: number): Promise<void> {
    await this.#write(`removal of piece ${n} of task ${taskId}`, () => this.#db.del(pieceKey(taskId, n)));
  }
}
