/**
 * The passive CDN: fetches from the origin only what peers ask for, once. With a Range-capable origin each piece is
 * one `Range` GET, so peers start as soon as their first piece is seeded and a Range read of a huge blob costs the
 * origin only the pieces covering it. An origin that ignores Range is read once front to back and cut into pieces as
 * the bytes arrive. Concurrent requests for one piece share one origin fetch.
 */
import { setMaxListeners } from 'node:events';
import type { Dispatcher } from 'undici';
import type { Counter } from 'prom-client';
import {
  checkDigest,
  describeError,
  fetchOrigin,
  parseDigest,
  pieceCountFor,
  pieceRange,
  pieceSizeFor,
  probeOrigin,
  redactUrl,
  sleep,
  taskIdFor,
  isDamselflyError,
  writePiece,
  writeWholeStream,
  type Logger,
} from '@damselfly/shared';
import type { TaskStore } from '../resource/task-store.js';
import type { TaskMeta } from '../resource/task-meta.js';
import { snError } from '../errors.js';
import { Semaphore } from './semaphore.js';

export interface SeederOptions {
  originConcurrency: number;
  /** Attempts per piece before giving up (transient origin errors). */
  attempts?: number;
}

export interface SeederComponents {
  store: TaskStore;
  dispatcher: Dispatcher;
  log: Logger;
  originBytes: Counter<string>;
}

export class Seeder {
  readonly #c: SeederComponents;
  readonly #sem: Semaphore;
  readonly #attempts: number;
  /** Latest origin headers per task, in memory only (credentials are never persisted). */
  readonly #headers = new Map<string, Record<string, string>>();
  readonly #registering = new Map<string, Promise<TaskMeta>>();
  readonly #inflight = new Map<string, Promise<string>>();
  readonly #whole = new Map<string, Promise<void>>();
  readonly #stop = new AbortController();

  constructor(opts: SeederOptions, components: SeederComponents) {
    this.#c = components;
    // Every queued origin fetch listens on the stop signal: many listeners are expected.
    setMaxListeners(0, this.#stop.signal);
    this.#sem = new Semaphore(opts.originConcurrency);
    this.#attempts = opts.attempts ?? 3;
  }

  stop(): void {
    this.#stop.abort(snError('SN_SHUTTING_DOWN'));
  }

  /** Finds or creates the task for `url`, probing the origin for its size on first sight. */
  async register(url: URL, digest: string | undefined, headers: Record<string, string>, { signal }: { signal?: AbortSignal } = {}): Promise<TaskMeta> {
    const blobDigest = checkDigest(url, digest);
    const taskId = taskIdFor(url, blobDigest);
    if (Object.keys(headers).length || !this.#headers.has(taskId)) this.#headers.set(taskId, headers);
    const known = this.#c.store.get(taskId);
    if (known) return known;
    let p = this.#registering.get(taskId);
    if (!p) {
      p = this.#create(taskId, url, blobDigest, headers, signal).finally(() => this.#registering.delete(taskId));
      this.#registering.set(taskId, p);
    }
    return p;
  }

  async #create(taskId: string, url: URL, digest: string | undefined, headers: Record<string, string>, signal?: AbortSignal): Promise<TaskMeta> {
    const probe = await probeOrigin({ url: url.href, headers, dispatcher: this.#c.dispatcher, signal });
    const pieceSize = pieceSizeFor(probe.contentLength);
    const meta: TaskMeta = {
      taskId,
      url: url.href,
      digest,
      contentLength: probe.contentLength,
      pieceSize,
      pieceCount: pieceCountFor(probe.contentLength, pieceSize),
      acceptsRanges: probe.acceptsRanges,
      createdAt: Date.now(),
    };
    await this.#c.store.create(meta);
    this.#c.log.info({ taskId, url: redactUrl(url.href), length: meta.contentLength, pieces: meta.pieceCount, ranges: meta.acceptsRanges }, 'task:created');
    return meta;
  }

  /** Resolves with the piece's sha256 once it is on the supernode's disk, seeding it from the origin if needed. */
  async ensurePiece(taskId: string, n: number, { signal }: { signal?: AbortSignal } = {}): Promise<string> {
    const meta = this.#c.store.get(taskId);
    if (!meta) throw snError('SN_TASK_NOT_FOUND', taskId);
    if (!Number.isInteger(n) || n < 0 || n >= meta.pieceCount) throw snError('SN_PIECE_OUT_OF_RANGE', `${n} of ${meta.pieceCount}`);
    const done = this.#c.store.pieceSha(taskId, n);
    if (done) return done;
    const key = `${taskId}:${n}`;
    let p = this.#inflight.get(key);
    if (!p) {
      p = (meta.acceptsRanges ? this.#seedPiece(meta, n) : this.#waitWhole(meta, n)).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, p);
    }
    return signal ? abortable(p, signal) : p;
  }

  async #seedPiece(meta: TaskMeta, n: number): Promise<string> {
    const { start, end } = pieceRange(n, meta.pieceSize, meta.contentLength);
    const signal = this.#stop.signal;
    let lastErr: unknown;
    for (let attempt = 1; attempt <= this.#attempts; attempt++) {
      const release = await this.#sem.acquire(signal);
      try {
        const fh = await this.#c.store.handle(meta.taskId);
        const body = await fetchOrigin({ url: meta.url, headers: this.#headers.get(meta.taskId), dispatcher: this.#c.dispatcher, signal }, start, end);
        const sha = await writePiece(fh, start, end - start + 1, body, { label: `${meta.taskId}#${n}`, signal, onBytes: (b) => this.#c.originBytes.inc(b) });
        await this.#c.store.recordPiece(meta.taskId, n, sha);
        this.#c.log.debug({ taskId: meta.taskId, piece: n }, 'piece:seeded');
        return sha;
      } catch (err) {
        lastErr = err;
        // Auth and not-found answers will not change on retry; the client must see them as they are.
        if (signal.aborted || (isDamselflyError(err) && (err.code === 'ORIGIN_AUTH' || err.code === 'ORIGIN_NOT_FOUND'))) throw err;
        if (isDamselflyError(err, 'ORIGIN_NO_RANGE')) {
          // The origin stopped honouring Range (e.g. a pull-through cache): fall back to one sequential read.
          meta.acceptsRanges = false;
          release();
          return this.#waitWhole(meta, n);
        }
        this.#c.log.warn({ taskId: meta.taskId, piece: n, attempt, err: describeError(err) }, 'piece:seed-failed');
        if (attempt < this.#attempts) await sleep(200 * attempt, { signal });
      } finally {
        release();
      }
    }
    throw snError('SN_SEED_FAILED', `${meta.taskId}#${n}: ${describeError(lastErr)}`, lastErr);
  }

  /** Waits for piece `n` of a task whose origin ignores Range, starting the one sequential read if needed. */
  async #waitWhole(meta: TaskMeta, n: number): Promise<string> {
    let run = this.#whole.get(meta.taskId);
    if (!run) {
      run = this.#readWhole(meta).finally(() => this.#whole.delete(meta.taskId));
      this.#whole.set(meta.taskId, run);
    }
    await run;
    const sha = this.#c.store.pieceSha(meta.taskId, n);
    if (!sha) throw snError('SN_SEED_FAILED', `${meta.taskId}#${n} missing after a full read`);
    return sha;
  }

  async #readWhole(meta: TaskMeta): Promise<void> {
    const signal = this.#stop.signal;
    const release = await this.#sem.acquire(signal);
    try {
      const fh = await this.#c.store.handle(meta.taskId);
      const body = await fetchOrigin({ url: meta.url, headers: this.#headers.get(meta.taskId), dispatcher: this.#c.dispatcher, signal }, 0, meta.contentLength - 1, true);
      await writeWholeStream(fh, body, {
        pieceSize: meta.pieceSize,
        length: meta.contentLength,
        skip: (n) => this.#c.store.pieceSha(meta.taskId, n) !== undefined,
        onPiece: (n, sha) => this.#c.store.recordPiece(meta.taskId, n, sha),
        onBytes: (n) => this.#c.originBytes.inc(n),
        signal,
      });
    } finally {
      release();
    }
  }
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
