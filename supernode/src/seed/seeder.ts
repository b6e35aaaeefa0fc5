/**
 * The passive CDN: fetches from the origin only what peers ask for, once. With a Range-capable origin each piece is
 * one `Range` GET, so peers start as soon as their first piece is seeded and a Range read of a huge blob costs the
 * origin only the pieces covering it. An origin that ignores Range is read once front to back and cut into pieces as
 * the bytes arrive. Concurrent requests for one piece share one origin fetch.
 *
 * Trust rules kept here:
 * - only origins the operator allowed are fetched, through a dispatcher that refuses private addresses on every hop;
 * - origin credentials are those of the peer whose request causes the fetch, in memory while that peer is in the
 *   task, never persisted, logged or shared with another requester;
 * - a task with a digest is checked against it as it is seeded; if its bytes are not the digest's, it is dropped and
 *   refused for a while.
 */
import { setMaxListeners } from 'node:events';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { Counter } from 'prom-client';
import {
  abortable,
  anonymousUrl,
  displayUrl,
  carriesCredentials,
  checkDigest,
  checkOriginAccess,
  describeError,
  fetchOrigin,
  fetchOriginRange,
  discardPieceBody,
  type OriginFastPath,
  isDamselflyError,
  isDiskFull,
  pieceCountFor,
  pieceRange,
  pieceSizeFor,
  probeOrigin,
  redactUrl,
  sleep,
  taskIdFor,
  writePiece,
  writeWholeStream,
  TokenBucket,
  paceAll,
  type Pace,
  TransferGuard,
  isTransferTimeout,
  wholeObjectGuard,
  DigestCheck,
  blockCountFor,
  BLOCK_SIZE,
  type Logger,
  type OriginAllowList,
} from '@damselfly/shared';
import type { TaskStore } from '../resource/task-store.js';
import type { TaskMeta } from '../resource/task-meta.js';
import { snError } from '../errors.js';
import { Semaphore } from './semaphore.js';

export interface SeederOptions {
  originConcurrency: number;
  /** Per origin host: one slow origin cannot hold every slot. */
  originConcurrencyPerHost?: number;
  /** Slowest acceptable origin transfer (bytes/s, judged after 10 s; 0 = any) and the longest one piece may take. */
  originMinRate?: number;
  originTimeoutMs?: number;
  /** Attempts per piece before giving up (transient origin errors). */
  attempts?: number;
  /** How long a task whose bytes did not match its digest is refused. */
  refuseMs?: number;
  /** A requester's origin headers are dropped after this long unused (they are re-sent with every registration). */
  credentialTtlMs?: number;
  /** Largest origin object a task may have. */
  maxBlobSize?: number;
  /** Smallest piece a blob is cut into (pieceSizeFor's floor). */
  minPieceSize?: number;
  /** Most bytes/s fetched from all origins together (0 or absent = no limit). */
  originRate?: number;
}

export interface SeederComponents {
  store: TaskStore;
  /** Follows redirects, and connects only to permitted addresses. */
  dispatcher: Dispatcher;
  /** Piece ranges from origins that answer plainly (same address policy; see fetchOriginRange). */
  originFast?: OriginFastPath;
  origins: OriginAllowList;
  log: Logger;
  originBytes: Counter<string>;
  /** Bytes fed to digest checks, by `how`: `inline` or `read_back`. */
  digestBytes?: Counter<string>;
  /** A task was dropped because its bytes do not match its digest. */
  onPoisoned?: (taskId: string) => void;
  /** A task was dropped because its object changed at the origin (no digest to hold it to). */
  onDropped?: (taskId: string) => void;
  /** A piece was recorded (its block hashes are known: peers fetching it can relay it now). */
  onRecorded?: (taskId: string, n: number) => void;
  /** A write found the disk full: makes room (a GC pass under pressure) before the next attempt. */
  onDiskFull?: () => Promise<unknown>;
}

/** How one requester reaches the origin: its own URL and headers, in memory only, for as long as they are used. */
interface Source {
  url: URL;
  headers: Record<string, string>;
  usedAt: number;
}

/**
 * Longest wait for the first block the size probe brings: the registration (and every peer joining it) waits for it.
 * Past this the block is left to piece 0's own fetch.
 */
const HEAD_DEADLINE_MS = 5_000;

export class Seeder {
  readonly #c: SeederComponents;
  readonly #sem: Semaphore;
  readonly #hostSems = new Map<string, Semaphore>();
  readonly #perHost: number;
  readonly #guard: { minBytesPerSecond: number; deadlineMs: number; graceMs: number };
  /** The origin limit, shared by every origin transfer. */
  readonly limit: TokenBucket;
  readonly #pace: Pace | undefined;
  readonly #attempts: number;
  readonly #refuseMs: number;
  readonly #credentialTtlMs: number;
  readonly #maxBlobSize: number | undefined;
  readonly #minPieceSize: number | undefined;
  readonly #sources = new Map<string, Map<string, Source>>();
  /** Registrations under way, with the signal of the session whose probe it is (the one that created it). */
  readonly #registering = new Map<string, { p: Promise<TaskMeta>; signal?: AbortSignal }>();
  /** Piece seeds under way, by `<task>:<record generation>:<piece>`. */
  readonly #inflight = new Map<string, Promise<string>>();
  /** One sequential read per record of an origin without Range, by `<task>:<record generation>`. */
  readonly #whole = new Map<string, Promise<void>>();
  readonly #checks = new Map<string, DigestCheck>();
  readonly #refused = new Map<string, number>();
  readonly #stop = new AbortController();

  constructor(opts: SeederOptions, components: SeederComponents) {
    this.#c = components;
    // Every queued origin fetch listens on the stop signal: many listeners are expected.
    setMaxListeners(0, this.#stop.signal);
    this.#sem = new Semaphore(opts.originConcurrency);
    this.#perHost = opts.originConcurrencyPerHost ?? opts.originConcurrency;
    this.limit = new TokenBucket(opts.originRate ?? 0);
    this.#pace = paceAll([this.limit]);
    // Under an origin limit the transfers share it: each is judged against its share, not the origin's own pace.
    const minRate = opts.originMinRate ?? 0;
    const share = this.limit.rate > 0 ? this.limit.rate / opts.originConcurrency / 2 : Infinity;
    this.#guard = { minBytesPerSecond: Math.min(minRate, share), deadlineMs: opts.originTimeoutMs ?? 300_000, graceMs: 10_000 };
    this.#attempts = opts.attempts ?? 3;
    this.#refuseMs = opts.refuseMs ?? 10 * 60_000;
    this.#credentialTtlMs = opts.credentialTtlMs ?? 15 * 60_000;
    this.#maxBlobSize = opts.maxBlobSize;
    this.#minPieceSize = opts.minPieceSize;
  }

  stop(): void {
    this.#stop.abort(snError('SN_SHUTTING_DOWN'));
  }

  /**
   * Finds or creates the task for `url`, probing the origin for its size on first sight. With a `requester`, its
   * URL and headers are kept (in memory) to seed the pieces it asks for. `onProbed` is called when this very call's
   * headers were the ones the origin answered the size probe for (it created the task): they can read the object.
   */
  async register(
    url: URL,
    digest: string | undefined,
    headers: Record<string, string>,
    { signal, requester, onProbed }: { signal?: AbortSignal; requester?: string; onProbed?: () => void } = {},
  ): Promise<TaskMeta> {
    if (!this.#c.origins.allows(url)) throw snError('SN_ORIGIN_FORBIDDEN', `${url.protocol}//${url.host}`);
    const blobDigest = checkDigest(url, digest);
    const taskId = taskIdFor(url, blobDigest);
    this.assertNotRefused(taskId, `${blobDigest} at ${redactUrl(url.href)}`);
    // Kept from the start, in call order: a later registration of the same requester (a new session that took over
    // its id) replaces them, and an earlier one finishing late does not put its own back.
    const source: Source | undefined = requester ? { url, headers, usedAt: Date.now() } : undefined;
    if (requester) this.#sourcesOf(taskId).set(requester, source!);
    try {
      return await this.#join(taskId, url, blobDigest, headers, signal, onProbed);
    } catch (err) {
      // A failed registration keeps nothing: its requester joined no task that its leave or close would forget them
      // with, and a member failing registrations on purpose must not make the supernode hold their bytes.
      if (requester && this.#sources.get(taskId)?.get(requester) === source) this.forget(taskId, requester);
      throw err;
    }
  }

  async #join(taskId: string, url: URL, digest: string | undefined, headers: Record<string, string>, signal: AbortSignal | undefined, onProbed: (() => void) | undefined): Promise<TaskMeta> {
    // A registration under way is joined even once its task is in the store: the probe's first block is still being
    // written, and a piece request for it now would fetch it a second time beside that write.
    const under = this.#registering.get(taskId);
    if (under) {
      try {
        return await under.p;
      } catch (err) {
        // Cut because the session that created it left (its probe went with that session's signal), not by the
        // origin: this registration, still wanted, goes to the origin itself rather than failing with the other's abort.
        if (!under.signal?.aborted || signal?.aborted) throw err;
        // Its probe may have found the blob not to be its digest's before the session left: that stands.
        this.assertNotRefused(taskId);
        return this.#join(taskId, url, digest, headers, signal, onProbed);
      }
    }
    const known = this.#c.store.get(taskId);
    if (known) {
      await this.#c.store.touch(taskId);
      return known;
    }
    // A registration that joins one under way learns nothing of its own headers from that one's probe.
    const p = this.#create(taskId, url, digest, headers, signal).finally(() => this.#registering.delete(taskId));
    this.#registering.set(taskId, { p, signal });
    const meta = await p;
    onProbed?.();
    return meta;
  }

  /**
   * Throws SN_DIGEST_MISMATCH for a task dropped because its bytes were not its digest's (for the refusal period):
   * peers asking about it after the drop learn why, not merely that it is gone.
   */
  assertNotRefused(taskId: string, what: string = taskId): void {
    const refusedUntil = this.#refused.get(taskId);
    if (refusedUntil === undefined) return;
    if (refusedUntil > Date.now()) throw snError('SN_DIGEST_MISMATCH', what);
    this.#refused.delete(taskId);
  }

  /** The requester left the task (or the cluster): its credentials are dropped. */
  forget(taskId: string, requester: string): void {
    const m = this.#sources.get(taskId);
    m?.delete(requester);
    if (m?.size === 0) this.#sources.delete(taskId);
  }

  /** Drops origin credentials nobody used lately, and expired refusals. */
  sweep(now = Date.now()): void {
    for (const [taskId, m] of this.#sources) {
      for (const [requester, s] of m) if (now - s.usedAt > this.#credentialTtlMs) m.delete(requester);
      if (m.size === 0) this.#sources.delete(taskId);
    }
    for (const [taskId, until] of this.#refused) if (until <= now) this.#refused.delete(taskId);
  }

  /** Whether the task is being registered, seeded or read whole from the origin right now (GC leaves it alone). */
  busy(taskId: string): boolean {
    if (this.#registering.has(taskId)) return true;
    for (const key of [...this.#inflight.keys(), ...this.#whole.keys()]) if (key.startsWith(`${taskId}:`)) return true;
    return false;
  }

  /** Drops everything held in memory for a task (it is being evicted). */
  forgetTask(taskId: string): void {
    this.#sources.delete(taskId);
    this.#checks.delete(taskId);
  }

  /** Requesters whose origin credentials are held now (for tests and metrics; never the credentials themselves). */
  get heldCredentials(): number {
    let n = 0;
    for (const m of this.#sources.values()) n += m.size;
    return n;
  }

  #sourcesOf(taskId: string): Map<string, Source> {
    let m = this.#sources.get(taskId);
    if (!m) this.#sources.set(taskId, (m = new Map()));
    return m;
  }

  async #create(taskId: string, url: URL, digest: string | undefined, headers: Record<string, string>, signal?: AbortSignal): Promise<TaskMeta> {
    // The anonymous check (for a request with credentials: a request and a token dance of its own) runs beside the
    // size probe rather than after it: a private blob's first registration waits for the slower of the two, not both.
    // The probe asks for the object's first block, not just its first byte: the same round trip then seeds it, and a
    // blob of one block (a config, a small layer) is whole before anyone asks for a piece.
    const [probed, publicity] = await Promise.allSettled([
      probeOrigin({ url: url.href, headers, dispatcher: this.#c.dispatcher, signal, maxLength: this.#maxBlobSize }, { head: BLOCK_SIZE }),
      this.#isPublic(url, headers, signal),
    ]);
    if (probed.status === 'rejected') throw probed.reason;
    const probe = probed.value;
    if (publicity.status === 'rejected') {
      if (probe.head) discardPieceBody(probe.head);
      throw publicity.reason;
    }
    const isPublic = publicity.value;
    const pieceSize = pieceSizeFor(probe.contentLength, this.#minPieceSize);
    const meta: TaskMeta = {
      taskId,
      origin: displayUrl(url),
      digest,
      contentLength: probe.contentLength,
      pieceSize,
      pieceCount: pieceCountFor(probe.contentLength, pieceSize),
      public: isPublic,
      acceptsRanges: probe.acceptsRanges,
      createdAt: Date.now(),
      ...(!digest && probe.validator ? { validator: probe.validator } : {}),
    };
    try {
      await this.#c.store.create(meta);
    } catch (err) {
      if (probe.head) discardPieceBody(probe.head);
      throw err;
    }
    this.#c.log.info({ taskId, origin: redactUrl(url.href), length: meta.contentLength, pieces: meta.pieceCount, ranges: meta.acceptsRanges, public: meta.public }, 'task:created');
    if (probe.head) await this.#keepHead(meta, probe.head);
    return meta;
  }

  /**
   * Seeds piece 0's first block from the probe's answer (registrations of the task wait for this), and
   * records the piece if that block is all of it. A failure costs only the block, fetched again when wanted; a digest
   * mismatch (a blob of one block) drops the task and is the registration's answer.
   */
  async #keepHead(meta: TaskMeta, body: Readable): Promise<void> {
    const task = this.#c.store.pieces(meta.taskId);
    if (!task) return void discardPieceBody(body);
    const { start, end } = pieceRange(0, meta.pieceSize, meta.contentLength);
    const length = end - start + 1;
    // The registration waits for this block: a slow one is given up (and fetched with piece 0) rather than waited for.
    const guard = new TransferGuard({ signal: this.#stop.signal, deadlineMs: Math.min(HEAD_DEADLINE_MS, this.#guard.deadlineMs) });
    // A stalled body yields no chunk to notice the deadline on: ending the body ends the wait.
    const cut = () => discardPieceBody(body);
    guard.signal.addEventListener('abort', cut, { once: true });
    try {
      await this.#writeBlocks(meta, 0, body, [0, 1], guard.signal, (b) => {
        guard.onBytes(b);
        this.#c.originBytes.inc(b);
      });
      if (blockCountFor(length) === 1) await this.#recorded(meta, 0, task.expectedBlocks(0) as string[]);
    } catch (err) {
      discardPieceBody(body);
      if (isDamselflyError(err, 'SN_DIGEST_MISMATCH')) throw err;
      this.#c.log.warn({ taskId: meta.taskId, err: describeError(err) }, 'task:head-not-kept');
    } finally {
      guard.signal.removeEventListener('abort', cut);
      guard.done();
    }
  }

  /**
   * Whether the origin gives this object to anybody: an anonymous request (token dance included) once per task.
   * A probe that already went without credentials answers it; an unreachable origin counts as private.
   */
  async #isPublic(url: URL, headers: Record<string, string>, signal?: AbortSignal): Promise<boolean> {
    if (!carriesCredentials(url, headers)) return true;
    try {
      const r = await checkOriginAccess({ url: anonymousUrl(url), headers: {}, dispatcher: this.#c.dispatcher, signal });
      return r.ok;
    } catch (err) {
      signal?.throwIfAborted();
      this.#c.log.warn({ origin: redactUrl(url.href), err: describeError(err) }, 'task:anonymous-check-failed');
      return false;
    }
  }

  /**
   * Resolves with the piece's sha256 once it is on the supernode's disk, seeding it from the origin if needed with
   * `requester`'s own access to it.
   */
  async ensurePiece(taskId: string, n: number, { signal, requester, first = 0 }: { signal?: AbortSignal; requester?: string; first?: number } = {}): Promise<string> {
    const meta = this.#c.store.get(taskId);
    if (!meta) {
      this.assertNotRefused(taskId);
      throw snError('SN_TASK_NOT_FOUND', taskId);
    }
    if (!Number.isInteger(n) || n < 0 || n >= meta.pieceCount) throw snError('SN_PIECE_OUT_OF_RANGE', `${n} of ${meta.pieceCount}`);
    const done = this.#c.store.pieceSha(taskId, n);
    if (done) return done;
    // Keyed by the task's record as well: a task dropped and registered again (its object changed at the origin) has a
    // new record, and its pieces are never joined to a seeding of the old one.
    const key = `${taskId}:${this.#generation(meta)}:${n}`;
    let p = this.#inflight.get(key);
    if (!p) {
      const source = requester ? this.#sources.get(taskId)?.get(requester) : undefined;
      if (!source) throw snError('SN_NOT_REGISTERED', `${taskId} (register the task on the control channel first)`);
      source.usedAt = Date.now();
      // Blocks land in the shared store as they are verified (`hashed`, `landed`): readers wait for them there.
      p = (meta.acceptsRanges ? this.#seedPiece(meta, n, source, first) : this.#waitWhole(meta, n, source))
        .catch((err: unknown) => {
          // Every attempt failed: a later one starts afresh (readers of what these verified are cut with the error).
          if (this.#current(meta)) {
            this.#c.store.pieces(taskId)?.forgetAttempts(n);
            this.#forgetFed(taskId, n);
          }
          throw err;
        })
        .finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, p);
    }
    return signal ? abortable(p, signal) : p;
  }

  /**
   * Where to read piece `n` from: its recorded block hashes if it is seeded, or the seeding under way (started here
   * with `requester`'s access if needed), whose blocks readers wait for in the store as each one lands; `recorded`
   * settles when the seeding does.
   */
  async openPiece(
    taskId: string,
    n: number,
    opts: { signal?: AbortSignal; requester?: string; first?: number } = {},
  ): Promise<{ blocks: string[] } | { recorded: Promise<string> }> {
    const blocks = this.#c.store.pieceBlocks(taskId, n);
    if (blocks) return { blocks };
    const recorded = this.ensurePiece(taskId, n, opts);
    recorded.catch(() => {});
    return { recorded };
  }

  /** A slot for one origin request: the host's first (so one host never queues the others), then the global one. */
  async #slot(url: URL, signal: AbortSignal): Promise<() => void> {
    let host = this.#hostSems.get(url.host);
    if (!host) this.#hostSems.set(url.host, (host = new Semaphore(this.#perHost)));
    const releaseHost = await host.acquire(signal);
    try {
      const releaseAll = await this.#sem.acquire(signal);
      return () => {
        releaseAll();
        releaseHost();
      };
    } catch (err) {
      releaseHost();
      throw err;
    }
  }

  /**
   * Seeds piece `n` from the origin. With `first` > 0 (a reader needs that block first), blocks [first, end) and
   * [0, first) come in two Range requests, the second once the reader's block is in. Each block is reported to the
   * shared store as it is hashed and as it is written; readers wait for it there.
   */
  async #seedPiece(meta: TaskMeta, n: number, source: Source, first: number): Promise<string> {
    const { start, end } = pieceRange(n, meta.pieceSize, meta.contentLength);
    const length = end - start + 1;
    const count = blockCountFor(length);
    const task = this.#c.store.pieces(meta.taskId);
    if (!task) throw snError('SN_TASK_NOT_FOUND', meta.taskId);
    const parts: [number, number][] = first > 0 && first < count ? [[first, count], [0, first]] : [[0, count]];
    let lastErr: unknown;
    for (let attempt = 1; attempt <= this.#attempts; attempt++) {
      const release = await this.#slot(source.url, this.#stop.signal);
      // A deadline and a minimum rate per origin transfer: a dripping origin frees its slot instead of keeping it.
      const guard = new TransferGuard({ signal: this.#stop.signal, ...this.#guard });
      // One part failing stops the other before the attempt is retried: never two writers on one block.
      const sibling = new AbortController();
      const signal = AbortSignal.any([guard.signal, sibling.signal]);
      const onBytes = (b: number) => {
        guard.onBytes(b);
        this.#c.originBytes.inc(b);
      };
      const fetchPart = async ([from, to]: [number, number]) => {
        const body = await fetchOriginRange(
          { url: source.url.href, headers: source.headers, dispatcher: this.#c.dispatcher, signal, total: meta.contentLength, validator: meta.validator },
          start + from * BLOCK_SIZE,
          Math.min(end, start + to * BLOCK_SIZE - 1),
          this.#c.originFast,
        );
        guard.startRate();
        await this.#writeBlocks(meta, n, body, [from, to], signal, onBytes).catch((err: unknown) => {
          discardPieceBody(body);
          throw err;
        });
      };
      try {
        // Blocks already here at either end of a part (piece 0's first, seeded with the size probe) are not asked for;
        // a part left with anything in it starts at a block still missing.
        const trim = ([from, to]: [number, number]): [number, number] => {
          while (from < to && task.hasBlock(n, from)) from++;
          while (to > from && task.hasBlock(n, to - 1)) to--;
          return [from, to];
        };
        const todo = parts.map(trim).filter(([from, to]) => from < to);
        // The part holding the reader's block goes first; the rest of the piece is asked for once that block is in
        // (or its part ended): asked together, the origin answered the other part first about half the time, and the
        // reader waited for it.
        const head = todo[0] && todo.length > 1 ? fetchPart(todo[0]) : undefined;
        const headIn = head && Promise.race([task.waitBlock(n, todo[0]![0], { signal }).then((held) => held?.release(), () => {}), head.then(() => {}, () => {})]);
        const settled = await Promise.allSettled(
          todo.map(async (part, i) => {
            try {
              if (i === 0 && head) return await head;
              if (headIn) {
                await headIn;
                // A turn of the event loop first: the answers waiting on that block send it before this sets up the
                // next origin request (its connection, the address check, the request: up to a millisecond traced
                // here), where both continuations used to run in one go, this one first.
                await new Promise((resolve) => setImmediate(resolve));
                // (The first part may have failed meanwhile: no request is set up for an attempt already given up.)
                signal.throwIfAborted();
              }
              return await fetchPart(part);
            } catch (err) {
              sibling.abort(err);
              throw err;
            }
          }),
        );
        const failed = settled.find((r) => r.status === 'rejected');
        if (failed) throw (failed as PromiseRejectedResult).reason;
        const blocks = task.expectedBlocks(n);
        if (blocks.some((b) => b === undefined)) throw snError('SN_SEED_FAILED', `${meta.taskId}#${n}: blocks missing after every part was read`);
        const root = await this.#recorded(meta, n, blocks as string[]);
        this.#c.log.debug({ taskId: meta.taskId, piece: n }, 'piece:seeded');
        return root;
      } catch (err) {
        lastErr = err;
        // Auth, not-found and forbidden answers will not change on retry; the client must see them as they are.
        if (this.#stop.signal.aborted || isDamselflyError(err, 'ORIGIN_AUTH') || isDamselflyError(err, 'ORIGIN_NOT_FOUND') || isDamselflyError(err, 'ADDRESS_FORBIDDEN') || isDamselflyError(err, 'SN_DIGEST_MISMATCH')) throw err;
        if (isDamselflyError(err, 'ORIGIN_CHANGED')) {
          // The pieces recorded are of a version the origin no longer has: the task goes, and the next registration
          // starts over from a new probe.
          release();
          await this.#dropChanged(meta);
          throw err;
        }
        if (isDamselflyError(err, 'ORIGIN_NO_RANGE')) {
          // The origin stopped honouring Range (e.g. a pull-through cache): fall back to one sequential read, which
          // checks blocks verified before (piece 0's first, from the size probe) against their hashes.
          meta.acceptsRanges = false;
          release();
          return this.#waitWhole(meta, n, source);
        }
        this.#c.log.warn({ taskId: meta.taskId, piece: n, attempt, err: describeError(err) }, 'piece:seed-failed');
        // The blocks written so far stay (readers may be on them); room for the rest is made from idle tasks.
        await this.#roomAfter(err);
        if (attempt < this.#attempts) await sleep(200 * attempt, { signal: this.#stop.signal });
      } finally {
        guard.done();
        release();
      }
    }
    throw snError('SN_SEED_FAILED', `${meta.taskId}#${n}: ${describeError(lastErr)}`, lastErr);
  }

  /**
   * Writes blocks [from, to) of piece `n` from an origin body holding just those. Blocks an earlier attempt verified
   * (readers may be streaming them) must match again and are not rewritten; each block goes to readers as it is
   * hashed and to the digest check as it lands.
   */
  #writeBlocks(meta: TaskMeta, n: number, body: Awaited<ReturnType<typeof fetchOriginRange>>, [from, to]: [number, number], signal: AbortSignal, onBytes: (b: number) => void): Promise<string[]> {
    const task = this.#current(meta) ? this.#c.store.pieces(meta.taskId) : undefined;
    if (!task) return Promise.reject(snError('SN_TASK_NOT_FOUND', meta.taskId));
    const { start, end } = pieceRange(n, meta.pieceSize, meta.contentLength);
    return this.#c.store.withHandle(meta.taskId, (fh) =>
      writePiece(fh, start, end - start + 1, body, {
        label: `${meta.taskId}#${n}`,
        signal,
        onBytes,
        pace: this.#pace,
        blockBase: from,
        blockEnd: to,
        expected: task.expectedBlocks(n),
        have: (b) => task.hasBlock(n, b),
        onHashed: (b, sha, data) => task.hashed(n, b, sha, data),
        onBlock: (b, sha, data) => this.#landed(meta, n, b, sha, data),
      }),
    );
  }

  /** Waits for piece `n` of a task whose origin ignores Range, starting the one sequential read if needed. */
  async #waitWhole(meta: TaskMeta, n: number, source: Source): Promise<string> {
    // Keyed by record, as the piece seeds are: a task registered again (another version) never joins the old read.
    const key = `${meta.taskId}:${this.#generation(meta)}`;
    let run = this.#whole.get(key);
    if (!run) {
      run = this.#readWhole(meta, source).finally(() => this.#whole.delete(key));
      this.#whole.set(key, run);
    }
    // Done as soon as this piece is recorded, not when the whole object has been read (downloaders of early pieces
    // get their last block now). The object's last piece waits for the read's end: recording it completes the digest
    // check, and a downloader must learn a mismatch from it rather than get a whole-looking last piece.
    const waiting = new AbortController();
    try {
      await (n === meta.pieceCount - 1 ? run : Promise.race([run, this.#c.store.recorded(meta.taskId, n, waiting.signal)]));
    } finally {
      waiting.abort();
    }
    const sha = this.#c.store.pieceSha(meta.taskId, n);
    if (!sha) throw snError('SN_SEED_FAILED', `${meta.taskId}#${n} missing after a full read`);
    return sha;
  }

  async #readWhole(meta: TaskMeta, source: Source): Promise<void> {
    const release = await this.#slot(source.url, this.#stop.signal);
    // The same minimum rate as a piece's transfer, and a piece's deadline for each piece: an origin that drips the
    // object would otherwise hold this read, its slot and every reader of the task until the supernode stops.
    const guard = wholeObjectGuard({ signal: this.#stop.signal, ...this.#guard }, meta.pieceCount);
    const signal = guard.signal;
    let changed = false;
    try {
      // Held to the probed version: pieces recorded before it are skipped, not read again, and must be the same one's.
      const body = await fetchOrigin({ url: source.url.href, headers: source.headers, dispatcher: this.#c.dispatcher, signal, validator: meta.validator }, 0, meta.contentLength - 1, true);
      guard.startRate();
      await this.#c.store.withHandle(meta.taskId, (fh) =>
        writeWholeStream(fh, body, {
          pieceSize: meta.pieceSize,
          length: meta.contentLength,
          skip: (n) => this.#c.store.pieceSha(meta.taskId, n) !== undefined,
          // Blocks verified before this read (the size probe's, a Range fetch's before the origin stopped honouring
          // Range) must come again the same: readers may hold them.
          expected: (n) => this.#c.store.pieces(meta.taskId)?.expectedBlocks(n) ?? [],
          have: (n, b) => this.#c.store.pieces(meta.taskId)?.hasBlock(n, b) ?? false,
          onPiece: async (n, blocks) => void (await this.#recorded(meta, n, blocks)),
          onBlock: (n, b, sha, data) => this.#landed(meta, n, b, sha, data),
          onBytes: (n) => {
            guard.onBytes(n);
            this.#c.originBytes.inc(n);
          },
          pace: this.#pace,
          signal,
        }),
      ).catch((err: unknown) => {
        // A body the write never read to its end (the data file would not open, the write failed) is given up, not
        // left holding its origin connection.
        discardPieceBody(body);
        throw err;
      });
    } catch (err) {
      // Cut for being too slow or too long: the same failure as a piece's transfer cut for it.
      if (isTransferTimeout(err)) throw snError('SN_SEED_FAILED', `${meta.taskId} (one sequential read): ${describeError(err)}`, err);
      changed = isDamselflyError(err, 'ORIGIN_CHANGED');
      // The pieces recorded stay; room for the rest is made from idle tasks before a downloader's retry reads on.
      await this.#roomAfter(err);
      throw err;
    } finally {
      guard.done();
      release();
      // Another version now: the task goes, as when a range finds it (its slot let go first). A removal that fails
      // is logged, not thrown: the client is owed ORIGIN_CHANGED.
      if (changed) await this.#dropChanged(meta).catch((err: unknown) => this.#c.log.warn({ taskId: meta.taskId, err: describeError(err) }, 'task:drop-failed'));
    }
  }

  /** A write that found the disk full has room made (a GC pass under pressure) before the next attempt reads on. */
  async #roomAfter(err: unknown): Promise<void> {
    if (isDiskFull(err)) await this.#c.onDiskFull?.().catch((e: unknown) => this.#c.log.warn({ err: describeError(e) }, 'gc:failed'));
  }

  /** Block `b` of piece `n` was verified into the data file: readers may stream it, the digest check may take it. */
  #landed(meta: TaskMeta, n: number, b: number, sha: string, data: readonly Buffer[]): void {
    this.#c.store.pieces(meta.taskId)?.landed(n, b, sha, data);
    if (meta.digest && !meta.verified) this.#checkOf(meta).offer(n, b, data);
  }

  #checkOf(meta: TaskMeta): DigestCheck {
    let check = this.#checks.get(meta.taskId);
    if (!check) {
      const store = this.#c.store;
      check = new DigestCheck(meta, { seeded: (i) => store.pieceSha(meta.taskId, i) !== undefined, dataPath: store.dataPath(meta.taskId), signal: this.#stop.signal });
      this.#checks.set(meta.taskId, check);
    }
    return check;
  }

  /**
   * Piece `n`'s blocks were forgotten: a digest check that already hashed some of them is dropped. The next attempt
   * may bring other bytes for those blocks, which a check past them would never see (the task would end verified
   * while the data file holds the other bytes); a new check starts from 0 and reads back what is recorded.
   */
  #forgetFed(taskId: string, n: number): void {
    if (this.#checks.get(taskId)?.hasFed(n)) this.#checks.delete(taskId);
  }

  /** Records a seeded piece and advances the task's digest check; a mismatch drops the task and throws. */
  async #recorded(meta: TaskMeta, n: number, blocks: string[]): Promise<string> {
    if (!this.#current(meta)) throw snError('SN_TASK_NOT_FOUND', `${meta.taskId} (dropped while this piece was seeded)`);
    const root = await this.#c.store.recordPiece(meta.taskId, n, blocks);
    this.#c.onRecorded?.(meta.taskId, n);
    if (!meta.digest || meta.verified) return root;
    const check = this.#checkOf(meta);
    let outcome: Awaited<ReturnType<DigestCheck['advance']>>;
    try {
      outcome = await check.advance();
    } catch (err) {
      // A read error mid-check leaves its hash half-fed: drop it, and the next recorded piece starts a new one from 0.
      if (this.#checks.get(meta.taskId) === check) this.#checks.delete(meta.taskId);
      this.#c.log.warn({ taskId: meta.taskId, err: describeError(err) }, 'task:digest-check-restarted');
      return root;
    }
    if (outcome === 'pending') return root;
    const mismatch = () => snError('SN_DIGEST_MISMATCH', `${meta.digest} at ${meta.origin}: the origin sent sha256:${check.actual}`);
    // Pieces finishing together all see the final outcome; the first acts on it, the others only report it.
    if (this.#checks.get(meta.taskId) !== check) {
      if (outcome === 'mismatch') throw mismatch();
      return root;
    }
    this.#checks.delete(meta.taskId);
    if (outcome === 'match') {
      await this.#c.store.update(meta.taskId, { verified: true });
      this.#c.digestBytes?.inc({ how: 'inline' }, check.inlineBytes);
      this.#c.digestBytes?.inc({ how: 'read_back' }, check.readBackBytes);
      this.#c.log.info({ taskId: meta.taskId, inline: check.inlineBytes, readBack: check.readBackBytes }, 'task:verified');
      return root;
    }
    await this.#poison(meta, check.actual!);
    throw mismatch();
  }

  async #dropChanged(meta: TaskMeta): Promise<void> {
    // Only the version this seeding belongs to: a task registered again since is another record.
    if (!this.#current(meta)) return;
    this.#c.log.warn({ taskId: meta.taskId, origin: meta.origin, validator: meta.validator }, 'task:origin-changed');
    this.#sources.delete(meta.taskId);
    this.#c.onDropped?.(meta.taskId);
    await this.#c.store.remove(meta.taskId);
  }

  /** Whether `meta` is still the task's record (not dropped, and not replaced by a new registration). */
  #current(meta: TaskMeta): boolean {
    return this.#c.store.get(meta.taskId) === meta;
  }

  readonly #generations = new WeakMap<TaskMeta, number>();
  #nextGeneration = 0;
  /** A number per task record, for keys that must not outlive it. */
  #generation(meta: TaskMeta): number {
    let g = this.#generations.get(meta);
    if (g === undefined) this.#generations.set(meta, (g = ++this.#nextGeneration));
    return g;
  }

  async #poison(meta: TaskMeta, actual: string): Promise<void> {
    this.#c.log.error({ taskId: meta.taskId, origin: meta.origin, digest: meta.digest, actual: `sha256:${actual}` }, 'task:digest-mismatch');
    // Refused and forgotten at once, before the files go: nothing may be scheduled or registered in between.
    this.#refused.set(meta.taskId, Date.now() + this.#refuseMs);
    this.#sources.delete(meta.taskId);
    this.#c.onPoisoned?.(meta.taskId);
    await this.#c.store.remove(meta.taskId);
  }
}
