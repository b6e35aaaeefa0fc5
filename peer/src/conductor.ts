/**
 * Drives one task to completion: registers with the task's supernode, asks it which peer (or itself) to fetch each
 * missing piece from, fetches pieces in parallel, verifies and stores them, reports every result; if the supernode
 * cannot be reached (or dies midway) finishes the rest straight from the origin; finally checks the whole blob
 * against its OCI digest. Retry and fallback decisions for a task live here and nowhere else.
 */
import { setMaxListeners } from 'node:events';
import type { Dispatcher } from 'undici';
import {
  displayUrl,
  carriesCredentials,
  checkDigest,
  BLOCK_SIZE,
  describeError,
  DigestCheck,
  isDamselflyError,
  isDigestMismatch,
  isTransferTimeout,
  parseDigest,
  pieceCountFor,
  pieceSizeFor,
  probeOrigin,
  sharedError,
  taskIdFor,
  type Logger,
  type RateMeters,
  type TokenBucket,
  paceAll,
  type ProbeResult,
  type Assignment,
  type WantResult,
  type TaskInfo,
  type TaskStatus,
  type BulkClient,
} from '@damselfly/shared';
import type { LocalStore } from './local-store.js';
import type { LocalTask } from './local-task.js';
import type { SupernodePool } from './supernode-pool.js';
import type { SupernodeClient } from './supernode-client.js';
import type { PeerMetrics } from './metrics.js';
import { fetchPiece } from './piece-fetcher.js';
import { backToSource } from './back-to-source.js';
import { Nudge } from './nudge.js';
import { endgamePieces } from './endgame.js';
import { INFLIGHT_WINDOW_MS, SaturationClock, inflightBounds, startInflight, tuneInflight } from './inflight.js';
import { peerError } from './errors.js';

export interface DownloadRequest {
  url: URL;
  /** Expected digest of the whole blob (`sha256:…`); taken from the URL for registry blobs. */
  digest?: string;
  /** Headers for the origin (Authorization…). */
  headers: Record<string, string>;
}

export interface ConductorOptions {
  parallelPieces: number;
  pieceTimeoutMs: number;
  /** Slowest acceptable piece source in bytes/s (0 = any): a slower one is routed around like a timeout. */
  pieceMinRate: number;
  /** Largest object this node downloads itself (back-to-source). */
  maxBlobSize?: number;
  backSource: boolean;
  /** Most bytes/s this node downloads from all sources together, and from origins itself (0 or absent = no limit). */
  downloadRate?: number;
  backSourceRate?: number;
  /**
   * Failed attempts at one piece from the supernode before the download gives up. Failures from peers do not count:
   * after a couple of them the supernode serves the piece itself, so a piece never fails while it can still serve it.
   */
  pieceAttempts?: number;
}

export interface ConductorComponents {
  store: LocalStore;
  pool: SupernodePool;
  /** Origin requests (back-to-source). */
  dispatcher: Dispatcher;
  /** Piece requests to other cluster members. */
  cluster: BulkClient;
  /** A download ran out of disk (its task is already dropped): make room. */
  onDiskFull?: () => void;
  /**
   * The supernode's size probe of `url`, made with exactly these headers, was answered with the object when it
   * created the task: the origin gives it to whoever holds them (a node's access check can count it as its own).
   */
  onAccessChecked?: (url: URL, headers: Record<string, string>) => void;
  metrics: PeerMetrics;
  log: Logger;
  /** What each source delivers to this node in all (its transfers for every task), bytes/s. */
  sources?: RateMeters;
  /** The node's bandwidth limits, shared by all its downloads. */
  limits?: NodeLimits;
}

/** A node's download limits: everything it downloads, and what it fetches from origins itself. */
export interface NodeLimits {
  download: TokenBucket;
  backSource: TokenBucket;
}

/** How long a run whose wanted pieces are all in waits for more Range readers before it closes. */
const LINGER_MS = 2_000;

/** Statuses from the origin that retrying or another route will not change: pass them to the client. */
const FINAL_STATUS = new Set([401, 403, 404]);

/** Supernode refusals that mean "this origin is not for the cluster": the node fetches it itself instead. */
const NOT_FOR_CLUSTER = new Set(['SN_ORIGIN_FORBIDDEN', 'ADDRESS_FORBIDDEN']);

/** The pieces a task holds and their hashes, for a registration. */
function haveOf(task: LocalTask | undefined): { have?: number[]; haveSha?: string[] } {
  if (!task) return {};
  const have = task.present();
  return { have, haveSha: have.map((n) => task.sha(n)!) };
}

/** Peer failures on one piece that end a download anyway (the scheduler should have moved it to the supernode). */
const PEER_FAILURE_CAP = 16;

export class Conductor {
  readonly taskId: string;
  readonly #req: DownloadRequest;
  readonly #opts: Required<ConductorOptions>;
  readonly #c: ConductorComponents;
  readonly #log: Logger;
  #resolveOpened!: (t: LocalTask) => void;
  /** Everything (a whole-blob GET, prefetch) or only the pieces Range readers asked for. */
  #wantAll: boolean;
  readonly #wanted = new Set<number>();
  /** Set once the run stops taking new wants; a later reader starts a new run. */
  #closed = false;
  #wake: () => void = () => {};
  /** Resolves as soon as the task's size is known and its cache entry exists (so a proxy can send headers). */
  readonly opened: Promise<LocalTask>;

  constructor(req: DownloadRequest, opts: ConductorOptions, components: ConductorComponents, wantAll = true) {
    this.#req = req;
    this.#wantAll = wantAll;
    this.#opts = { pieceAttempts: 5, maxBlobSize: Number.MAX_SAFE_INTEGER, downloadRate: 0, backSourceRate: 0, ...opts };
    this.#c = components;
    this.taskId = taskIdFor(req.url, req.digest);
    this.#log = components.log.child({ taskId: this.taskId });
    let reject!: (e: unknown) => void;
    this.opened = new Promise<LocalTask>((res, rej) => {
      this.#resolveOpened = res;
      reject = rej;
    });
    this.opened.catch(() => {});
    this.#rejectOpened = reject;
  }
  readonly #rejectOpened: (e: unknown) => void;
  /**
   * The whole-blob check of a back-to-source download, fed from each block as it lands (in order) so the blob is not
   * read a second time; only blocks that landed ahead of the in-order prefix are read back.
   */
  #check?: DigestCheck;

  /**
   * Adds pieces this run must fetch (`all` for the whole blob). Returns false when the run is already finishing:
   * the caller then starts a new one.
   */
  want(pieces: readonly number[] | 'all', startAt?: number): boolean {
    if (this.#closed) return false;
    if (pieces === 'all') this.#wantAll = true;
    else for (const n of pieces) this.#wanted.add(n);
    if (startAt !== undefined && startAt > 0) {
      this.#startAt.push(startAt);
      // A long Range-read run (nydusd) asks many times: only recent asks matter.
      if (this.#startAt.length > 64) this.#startAt.shift();
    }
    this.#wake();
    return true;
  }

  /** Bytes Range readers need first: the pieces holding them are fetched starting at their block. */
  readonly #startAt: number[] = [];

  #firstBlock(task: LocalTask, n: number): number {
    const { pieceSize } = task.info;
    const at = this.#startAt.find((pos) => Math.floor(pos / pieceSize) === n);
    return at === undefined ? 0 : blockAt(at, pieceSize);
  }

  /**
   * The wanted pieces Range readers wait on, with the block each needs first (the supernode seeds from there): the
   * oldest ask in a piece, as `#firstBlock` picks. At most 64, as `#startAt` holds (the protocol's limit too).
   */
  #readers(task: LocalTask, want: readonly number[]): { piece: number; block: number }[] {
    const { pieceSize } = task.info;
    const wanted = new Set(want);
    const out = new Map<number, number>();
    for (const pos of this.#startAt) {
      const piece = Math.floor(pos / pieceSize);
      if (wanted.has(piece) && !out.has(piece)) out.set(piece, blockAt(pos, pieceSize));
    }
    return [...out].map(([piece, block]) => ({ piece, block }));
  }

  #missingWanted(task: LocalTask): number[] {
    const missing = task.missing();
    return this.#wantAll ? missing : missing.filter((n) => this.#wanted.has(n));
  }

  /** Waits up to `ms` for new wants; false (and the run closes) if none came. */
  async #idle(ms: number, signal: AbortSignal): Promise<boolean> {
    const woke = await new Promise<boolean>((resolve) => {
      const done = (v: boolean) => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      };
      const onAbort = () => done(false);
      const timer = setTimeout(() => done(false), ms);
      this.#wake = () => done(true);
      signal.addEventListener('abort', onAbort, { once: true });
    });
    this.#wake = () => {};
    if (!woke) this.#closed = true;
    return woke;
  }

  /** Runs the download; resolves with the task once everything wanted is present (and, if whole, verified). */
  async run({ signal }: { signal: AbortSignal }): Promise<LocalTask> {
    let task: LocalTask | undefined;
    try {
      task = await this.#run(signal);
      this.#c.metrics.tasks.inc({ result: 'ok' });
      return task;
    } catch (err) {
      // First of all: nobody joins a run that failed (a new reader starts a new run and learns for itself).
      this.#closed = true;
      this.#rejectOpened(err);
      task ??= this.#c.store.get(this.taskId);
      task?.fail(err as Error);
      // Bytes found not to be the digest's (here or by the supernode) are not kept for anyone: not even a Range read.
      // A download that filled the disk gives its space back at once, and the cache makes room for the next one.
      const diskFull = isDamselflyError(err, 'DF_DISK_FULL');
      if ((isDigestMismatch(err) || diskFull) && task && this.#c.store.get(this.taskId) === task) await this.#c.store.remove(this.taskId).catch(() => {});
      if (diskFull) this.#c.onDiskFull?.();
      this.#c.metrics.tasks.inc({ result: 'failed' });
      this.#log.warn({ err: describeError(err) }, 'task:failed');
      throw err;
    }
  }

  async #run(signal: AbortSignal): Promise<LocalTask> {
    const cached = this.#c.store.get(this.taskId);
    if (cached?.complete) {
      this.#closed = true;
      this.#resolveOpened(cached);
      return cached;
    }
    cached?.resetFailure();
    // Pieces from an earlier run may have come from the origin directly, with no supernode hash behind them: a blob
    // built partly on them is hashed here whatever the supernode says of its own copy.
    const inherited = (cached?.presentCount ?? 0) > 0;
    // Pieces left on disk by an earlier run are checked once before anyone builds on them (a crash, a bad disk).
    const dropped = (await cached?.recheck()) ?? [];
    if (dropped.length) this.#log.warn({ pieces: dropped }, 'cache:dropped-bad-pieces');
    const digest = checkDigest(this.#req.url, this.#req.digest);

    let client: SupernodeClient | undefined;
    let info: TaskInfo | undefined;
    let why = 'supernode_unavailable';
    let probe: ProbeResult | undefined;
    if (this.#c.pool.size > 0) {
      try {
        client = await this.#c.pool.clientFor(this.taskId, { signal });
        const reply = await client.request<TaskInfo>(
          { type: 'task:register', url: this.#req.url.href, digest, headers: this.#req.headers, ...haveOf(cached) },
          { signal },
        );
        // About this request's headers, not the task: said before anyone can ask for the client's access, and never
        // stored with the task.
        const { accessChecked, ...rest } = reply;
        if (accessChecked === true) this.#c.onAccessChecked?.(this.#req.url, this.#req.headers);
        info = rest;
      } catch (err) {
        signal.throwIfAborted();
        const refused = NOT_FOR_CLUSTER.has((err as { remoteCode?: string }).remoteCode ?? '');
        if (!(isDamselflyError(err, 'DF_SUPERNODE_UNAVAILABLE') || refused) || !this.#opts.backSource) throw this.#clientError(err);
        this.#log.warn({ err: describeError(err) }, refused ? 'supernode:origin-not-allowed, going back to source' : 'supernode:unavailable, going back to source');
        why = refused ? 'origin_not_allowed' : 'supernode_unavailable';
        client = undefined;
      }
    }
    if (!info) {
      if (!this.#opts.backSource) throw peerError('DF_SUPERNODE_UNAVAILABLE', 'no supernodes configured and back-to-source is off');
      this.#c.metrics.backSource.inc({ why: this.#c.pool.size ? why : 'no_supernode' });
      probe = await probeOrigin({ url: this.#req.url.href, headers: this.#req.headers, dispatcher: this.#c.dispatcher, signal, maxLength: this.#opts.maxBlobSize });
      const pieceSize = pieceSizeFor(probe.contentLength);
      info = {
        taskId: this.taskId,
        contentLength: probe.contentLength,
        pieceSize,
        pieceCount: pieceCountFor(probe.contentLength, pieceSize),
        digest,
        // Fetched without credentials, it is anybody's; with them, every later client proves its own access.
        public: !carriesCredentials(this.#req.url, this.#req.headers),
      };
    }
    const task = await this.#c.store.open(info, displayUrl(this.#req.url));
    const lease = task.lease();
    try {
      this.#resolveOpened(task);
      if (client) {
        try {
          await this.#p2p(task, client, signal);
        } catch (err) {
          if (signal.aborted || !isDamselflyError(err, 'DF_SUPERNODE_UNAVAILABLE') || !this.#opts.backSource) throw err;
          this.#log.warn({ err: describeError(err), missing: task.missing().length }, 'supernode:lost, finishing from source');
          this.#c.metrics.backSource.inc({ why: 'supernode_lost' });
          probe = undefined;
          client = undefined;
        }
      }
      if (!client) await this.#fromSource(task, probe, signal);
      this.#closed = true;
      if (task.missing().length) {
        this.#log.debug({ present: task.presentCount, pieces: info.pieceCount }, 'task:partial');
        return task;
      }
      await this.#verifyWhole(task, info.digest ?? digest, inherited ? undefined : client, signal);
      await task.markComplete();
      this.#log.info({ pieces: info.pieceCount, bytes: info.contentLength }, 'task:completed');
      return task;
    } finally {
      lease();
    }
  }

  #checkFor(task: LocalTask, signal: AbortSignal): DigestCheck | undefined {
    const digest = task.info.digest ?? this.#req.digest;
    if (!digest) return undefined;
    this.#check ??= this.#newCheck(task, digest, signal);
    return this.#check;
  }

  #newCheck(task: LocalTask, digest: string, signal: AbortSignal): DigestCheck {
    return new DigestCheck({ ...task.info, digest }, { seeded: (n) => task.has(n), dataPath: task.dataPath, signal });
  }

  /** Back-to-source for whatever is wanted, for as long as readers keep asking. */
  async #fromSource(task: LocalTask, probe: ProbeResult | undefined, signal: AbortSignal): Promise<void> {
    // Each recorded piece lets the digest's in-order prefix move on (reading back what landed ahead of it), so the
    // blocks after it are taken as they land instead of being read back at the end.
    const onPiece = () => void this.#checkFor(task, signal)?.advance().catch(() => {});
    task.on('piece:verified', onPiece);
    try {
      await this.#fromSourceLoop(task, probe, signal);
    } finally {
      task.off('piece:verified', onPiece);
    }
  }

  async #fromSourceLoop(task: LocalTask, probe: ProbeResult | undefined, signal: AbortSignal): Promise<void> {
    for (;;) {
      const want = this.#missingWanted(task);
      if (!want.length) {
        if (!task.missing().length || !(await this.#idle(LINGER_MS, signal))) return;
        continue;
      }
      await backToSource(
        task,
        {
          url: this.#req.url.href,
          headers: this.#req.headers,
          dispatcher: this.#c.dispatcher,
          parallel: Math.min(4, this.#opts.parallelPieces),
          pieces: want,
          signal,
          onBytes: (n) => this.#c.metrics.downloadBytes.inc({ source: 'back_to_source' }, n),
          pace: paceAll([this.#c.limits?.download, this.#c.limits?.backSource]),
          onBlock: (n, b, _sha, data) => this.#checkFor(task, signal)?.offer(n, b, data),
        },
        probe,
      );
    }
  }

  /**
   * The task's loop with the supernode: says once what it wants and how much it can take (`pieces:want`), starts every
   * assignment the reply and later pushes bring, reports each result, and says more only when its wants grow (a new
   * Range read), its in-flight limit changes or it stops. Nothing is asked on a timer: the loop wakes on events (an
   * assignment, a piece done, a new want, the supernode gone); local timers only re-tune the in-flight limit (every
   * 2 s) and notice a piece in flight turning slow (endgame).
   */
  async #p2p(task: LocalTask, client: SupernodeClient, signal: AbortSignal): Promise<void> {
    type Transfer = { ac: AbortController; startedAt: number; promise: Promise<void> };
    const inflight = new Map<number, Transfer>();
    /** Endgame second sources, by piece; and pieces that had their one chance of one. */
    const seconds = new Map<number, Transfer>();
    const asked = new Set<number>();
    /** How long this run's pieces took (their first transfer), for telling a slow one. */
    const durations: number[] = [];
    let endgameTimer: NodeJS.Timeout | undefined;
    // The in-flight limit, adapted to what this download measures (see inflight.ts).
    const bounds = inflightBounds(this.#opts.parallelPieces);
    let limit = startInflight(this.#opts.parallelPieces);
    const saturation = new SaturationClock();
    const fullness = () => saturation.update(performance.now(), inflight.size >= limit.limit);
    let received = 0;
    let windowStart = received;
    const tuner = setInterval(() => {
      const was = limit.limit;
      limit = tuneInflight(limit, { rate: ((received - windowStart) * 1000) / INFLIGHT_WINDOW_MS, saturated: saturation.take(performance.now(), INFLIGHT_WINDOW_MS) }, bounds);
      windowStart = received;
      if (limit.limit !== was) {
        fullness();
        news.poke();
      }
    }, INFLIGHT_WINDOW_MS);
    const attempts = new Map<number, number>();
    const peerAttempts = new Map<number, number>();
    let reregister = false;
    let lost = false;
    const local = new AbortController();
    const stop = AbortSignal.any([signal, local.signal]);
    // Every in-flight piece listens on these: many listeners are expected, not a leak.
    setMaxListeners(0, stop, signal);
    let fatal: unknown;
    const news = new Nudge();
    const taskId = task.info.taskId;
    /** Pieces the supernode was told this run wants, and the in-flight limit it was told. */
    let announced = new Set<number>();
    let announcedMax = 0;

    const sources = this.#c.sources;
    const pace = paceAll([this.#c.limits?.download]);
    /** Starts a transfer; `second`: an endgame second source for a piece already in flight. */
    const start = (assigned: Assignment, second = false) => {
      // The supernode's pieces are fetched where this peer reached the supernode itself (the session it authenticated,
      // over TLS the certificate it checked), whatever an assignment says: its framed block hashes are trusted for
      // what they are only because they come from the supernode.
      const a = assigned.from === 'supernode' ? { ...assigned, base: client.url } : assigned;
      const t0 = performance.now();
      const ac = new AbortController();
      // Held by the transfer record: the winner of an endgame pair cancels the other through it.
      const own = AbortSignal.any([stop, ac.signal]);
      const other = () => (second ? inflight : seconds).get(a.piece);
      const p = fetchPiece(task, a, {
        client: this.#c.cluster,
        timeoutMs: this.#opts.pieceTimeoutMs,
        // Under a download limit every source looks slow: judge them against a share of the limit, not beyond it. A
        // relay goes at its own source's pace: cutting it would only send the piece's next copy to the supernode.
        minBytesPerSecond: a.relay ? 0 : this.#opts.downloadRate > 0 ? Math.min(this.#opts.pieceMinRate, this.#opts.downloadRate / 4) : this.#opts.pieceMinRate,
        pace,
        // Keyed by address: the supernode is one source whatever the task.
        ...(sources ? { sourceRate: () => sources.rate(a.base) } : {}),
        onBytes: (n: number) => {
          received += n;
          sources?.add(a.base, n);
        },
        signal: own,
        firstBlock: this.#firstBlock(task, a.piece),
      })
        .then((bytes) => {
          const ms = performance.now() - t0;
          this.#log.debug({ piece: a.piece, from: a.from, ms: Math.round(ms), second: second || undefined }, 'piece:verified');
          // The rate it achieved: the supernode learns each source's capacity from these.
          client.notify({ type: 'piece:result', taskId, piece: a.piece, from: a.from, ok: true, rate: Math.round((bytes * 1000) / Math.max(1, ms)) });
          this.#c.metrics.downloadBytes.inc({ source: a.from === 'supernode' ? 'supernode' : 'peer' }, bytes);
          if (!second) durations.push(ms);
          else this.#c.metrics.endgameWins.inc();
          // The endgame race is over: the other transfer of this piece stops and frees its source.
          other()?.ac.abort();
        })
        .catch((err: unknown) => {
          if (own.aborted) {
            // Our own cancellation: free the slot booked for it at once, and blame nobody.
            client.notify({ type: 'piece:result', taskId, piece: a.piece, from: a.from, ok: false, reason: 'cancelled' });
            return;
          }
          const code = (err as { code?: string }).code;
          // A wrong hash, a wrong length from a source that knows the piece's size, and an answer that is not HTTP as
          // cluster members speak it are all bad data.
          const reason =
            code === 'PIECE_CORRUPT' || code === 'PIECE_SHORT' || code === 'BULK_PROTOCOL'
              ? 'corrupt'
              : isTransferTimeout(err) || code === 'BULK_HEADERS_TIMEOUT' || code === 'BULK_BODY_TIMEOUT'
                ? 'timeout'
                : 'error';
          client.notify({ type: 'piece:result', taskId, piece: a.piece, from: a.from, ok: false, reason });
          this.#c.metrics.pieceFailures.inc({ reason });
          this.#log.warn({ piece: a.piece, from: a.from, reason, second: second || undefined, err: describeError(err) }, 'piece:failed');
          // One of an endgame pair failed while the other goes on: that one decides the piece.
          if (other()) return;
          // Wanted again, and said so (the supernode also re-adds it on the report): the answer to that says whether
          // the task still exists there, so a run never waits for a push that will not come.
          announced.delete(a.piece);
          const status = (err as { status?: number }).status;
          const remoteCode = (err as { remoteCode?: string }).remoteCode ?? '';
          const fromSupernode = a.from === 'supernode';
          const counter = fromSupernode ? attempts : peerAttempts;
          const tries = (counter.get(a.piece) ?? 0) + 1;
          counter.set(a.piece, tries);
          if (code === 'PIECE_DISK_FULL') fatal = peerError('DF_DISK_FULL', describeError(err), err);
          // The supernode found the origin's bytes are not the digest's, or dropped the task for it: no retry helps.
          else if (remoteCode === 'SN_DIGEST_MISMATCH') fatal = sharedError('DIGEST_MISMATCH', describeError(err), err);
          else if (remoteCode === 'SN_TASK_NOT_FOUND') fatal = peerError('DF_TASK_FAILED', `the supernode no longer has task ${task.info.taskId}`, err);
          else if (remoteCode === 'SN_NOT_REGISTERED' && tries < this.#opts.pieceAttempts) reregister = true;
          // Only the origin's own refusal (relayed by the supernode) is final; a refused grant or a restarted
          // supernode is worth another try.
          else if (fromSupernode && status !== undefined && FINAL_STATUS.has(status) && remoteCode.startsWith('ORIGIN_')) fatal = this.#clientError(err);
          else if (fromSupernode ? tries >= this.#opts.pieceAttempts : tries >= PEER_FAILURE_CAP) {
            fatal = peerError('DF_PIECE_FAILED', `piece ${a.piece} after ${tries} attempts from ${fromSupernode ? 'the supernode' : 'peers'}: ${describeError(err)}`, err);
          }
        })
        .finally(() => {
          const map = second ? seconds : inflight;
          if (map.get(a.piece) === record) map.delete(a.piece);
          fullness();
          news.poke();
        });
      const record: Transfer = { ac, startedAt: t0, promise: p };
      (second ? seconds : inflight).set(a.piece, record);
      fullness();
    };
    const take = (list: Assignment[]) => {
      for (const a of list) {
        // Already arriving (the supernode let go of an earlier assignment of it): its report settles both.
        if (inflight.has(a.piece) || seconds.has(a.piece)) continue;
        if (task.has(a.piece) || stop.aborted) client.notify({ type: 'piece:result', taskId, piece: a.piece, from: a.from, ok: false, reason: 'cancelled' });
        else start(a);
      }
      news.poke();
    };
    const untake = client.assignments(taskId, take);
    const onClose = () => {
      lost = true;
      news.poke();
    };
    client.on('close', onClose);
    this.#wake = () => news.poke();

    try {
      for (;;) {
        if (fatal) throw fatal;
        signal.throwIfAborted();
        if (lost) throw peerError('DF_SUPERNODE_UNAVAILABLE', `${client.url}: connection closed`);
        const want = this.#missingWanted(task).filter((n) => !inflight.has(n) && !seconds.has(n));
        if (want.length === 0 && inflight.size === 0 && seconds.size === 0) {
          if (!task.missing().length || !(await this.#idle(LINGER_MS, signal))) return;
          this.#wake = () => news.poke();
          continue;
        }
        if (reregister) {
          // The supernode let go of this peer's origin credentials (unused too long, or it restarted): hand them
          // over again, and say again what this run wants.
          reregister = false;
          await client.request<TaskInfo>({ type: 'task:register', url: this.#req.url.href, digest: task.info.digest, headers: this.#req.headers, ...haveOf(task) }, { signal });
          announced = new Set();
        }
        const max = limit.limit;
        if (want.length && (max !== announcedMax || want.some((n) => !announced.has(n)))) {
          announced = new Set(want);
          announcedMax = max;
          const readers = this.#readers(task, want);
          const res = await client.request<WantResult>({ type: 'pieces:want', taskId, want, max, ...(readers.length ? { readers } : {}) }, { signal });
          take(res.assignments);
        }
        // Everything needed is in flight: a piece coming slowly gets a second source (see endgame.ts).
        const now = performance.now();
        const eg = endgamePieces({
          unrequested: want.length,
          inflight: [...inflight].map(([piece, t]) => ({ piece, startedAt: t.startedAt, asked: asked.has(piece) })),
          room: max - inflight.size - seconds.size,
          durations,
          now,
        });
        clearTimeout(endgameTimer);
        if (eg.nextAt < Infinity) endgameTimer = setTimeout(() => news.poke(), Math.max(0, eg.nextAt - now) + 1);
        if (eg.pieces.length) {
          for (const n of eg.pieces) asked.add(n);
          const res = await client.request<WantResult>({ type: 'pieces:endgame', taskId, pieces: eg.pieces }, { signal });
          for (const a of res.assignments) {
            // The piece may have landed while the request was out: its second source is let go at once.
            if (inflight.has(a.piece) && !seconds.has(a.piece) && !task.has(a.piece)) start(a, true);
            else client.notify({ type: 'piece:result', taskId, piece: a.piece, from: a.from, ok: false, reason: 'cancelled' });
          }
        }
        await news.next(signal);
      }
    } finally {
      clearInterval(tuner);
      clearTimeout(endgameTimer);
      untake();
      client.off('close', onClose);
      this.#wake = () => {};
      // Nothing more for this run: the supernode stops looking for sources for it.
      if (!lost && announced.size) client.request({ type: 'pieces:want', taskId, want: [], max: 0 }, { timeoutMs: 5_000 }).catch(() => {});
      if (inflight.size || seconds.size) {
        // Losing the supernode does not waste pieces already coming from peers.
        if (fatal || signal.aborted) local.abort();
        await Promise.allSettled([...inflight.values(), ...seconds.values()].map((t) => t.promise));
      }
    }
  }

  /**
   * The whole blob against its digest, once per cluster: when every piece was fetched in this run against the hash
   * the supernode recorded (`client` is given only then), and the supernode has read its copy back and found it
   * matches the digest, this copy does too and is not read again. Otherwise (no supernode, pieces from the origin or
   * from an earlier run, the supernode's check not done yet) it is hashed here.
   */
  async #verifyWhole(task: LocalTask, digest: string | undefined, client: SupernodeClient | undefined, signal: AbortSignal): Promise<void> {
    if (!digest) return;
    if (client && task.info.pieceCount > 0) {
      const status = await client.request<TaskStatus>({ type: 'task:status', taskId: task.info.taskId }, { signal, timeoutMs: 5_000 }).catch(() => undefined);
      if (status?.verified) {
        this.#c.metrics.wholeChecks.inc({ by: 'supernode' });
        return;
      }
    }
    this.#c.metrics.wholeChecks.inc({ by: 'local' });
    const want = parseDigest(digest).hex;
    // After a back-to-source download the check has been fed as blocks landed: it reads back only what it missed.
    let check = this.#checkFor(task, signal)!;
    let outcome = await check.advance().catch(() => undefined);
    if (outcome === undefined) {
      // A read failed while the check ran alongside the download: its hash is half-fed. One clean pass instead.
      check = this.#newCheck(task, digest, signal);
      outcome = await check.advance();
    }
    this.#c.metrics.digestBytes.inc({ how: 'inline' }, check.inlineBytes);
    this.#c.metrics.digestBytes.inc({ how: 'read_back' }, check.readBackBytes);
    if (outcome === 'pending') throw peerError('DF_TASK_FAILED', `${task.info.taskId}: a piece went missing before the digest check`);
    const got = check.actual;
    if (got !== want) {
      await this.#c.store.remove(task.info.taskId);
      throw sharedError('DIGEST_MISMATCH', `blob is sha256:${got}, expected ${digest}`);
    }
  }

  /** Maps a supernode/origin refusal to an error carrying the origin's status for the client. */
  #clientError(err: unknown): unknown {
    const status = (err as { status?: number }).status;
    if (status !== undefined && FINAL_STATUS.has(status)) {
      const e = peerError('DF_TASK_FAILED', describeError(err), err);
      Object.assign(e, { status });
      return e;
    }
    return err;
  }
}

/** The block of its piece that byte `pos` of a task lies in. */
function blockAt(pos: number, pieceSize: number): number {
  return Math.floor((pos % pieceSize) / BLOCK_SIZE);
}
