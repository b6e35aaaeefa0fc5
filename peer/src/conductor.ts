/**
 * Drives one task to completion: registers with the task's supernode, asks it which peer (or itself) to fetch each
 * missing piece from, fetches pieces in parallel, verifies and stores them, reports every result; if the supernode
 * cannot be reached (or dies midway) finishes the rest straight from the origin; finally checks the whole blob
 * against its OCI digest. The loop with the supernode is p2p-run.ts; what a failed piece means, piece-failure.ts.
 */
import type { Dispatcher } from 'undici';
import {
  displayUrl,
  carriesCredentials,
  checkDigest,
  describeError,
  DigestCheck,
  isDamselflyError,
  isDiskFull,
  isDigestMismatch,
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
  type ByteRange,
  type RegisterReply,
  type TaskInfo,
  type TaskStatus,
  type BulkClient,
} from '@damselfly/shared';
import type { LocalStore } from './local-store.js';
import type { LocalTask } from './local-task.js';
import type { SupernodePool } from './supernode-pool.js';
import type { SupernodeClient } from './supernode-client.js';
import type { PeerMetrics } from './metrics.js';
import { backToSource } from './back-to-source.js';
import { Wants } from './wants.js';
import { LINGER_MS, haveOf, runP2p, type FirstWants, type P2pHost } from './p2p-run.js';
import { startInflight } from './inflight.js';
import { clientError } from './piece-failure.js';
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

/** Supernode refusals that mean "this origin is not for the cluster": the node fetches it itself instead. */
const NOT_FOR_CLUSTER = new Set(['SN_ORIGIN_FORBIDDEN', 'ADDRESS_FORBIDDEN']);

export class Conductor {
  readonly taskId: string;
  readonly #req: DownloadRequest;
  readonly #opts: Required<ConductorOptions>;
  readonly #c: ConductorComponents;
  readonly #log: Logger;
  #resolveOpened!: (t: LocalTask) => void;
  /** Everything (a whole-blob GET, prefetch) or only the pieces Range readers asked for. */
  readonly #wants: Wants;
  /** The bytes the Range reader that started this run asks for: stated with the registration. */
  readonly #read?: ByteRange;
  /** Set once the run stops taking new wants; a later reader starts a new run. */
  #closed = false;
  /** Wakes whatever the run waits on when a reader adds wants. */
  #wake: () => void = () => {};
  /** Resolves as soon as the task's size is known and its cache entry exists (so a proxy can send headers). */
  readonly opened: Promise<LocalTask>;

  constructor(req: DownloadRequest, opts: ConductorOptions, components: ConductorComponents, wantAll = true, read?: ByteRange) {
    this.#req = req;
    this.#wants = new Wants(wantAll);
    if (!wantAll) this.#read = read;
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
   * Adds pieces this run must fetch (`all` for the whole blob); `startAt`: the byte a Range reader needs first.
   * Returns false when the run is already finishing: the caller then starts a new one.
   */
  want(pieces: readonly number[] | 'all', startAt?: number): boolean {
    if (this.#closed) return false;
    this.#wants.add(pieces, startAt);
    this.#wake();
    return true;
  }

  /** Waits up to `ms` for new wants; false (and the run closes) if none came. */
  async #idle(ms: number, signal: AbortSignal): Promise<boolean> {
    const before = this.#wake;
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
    this.#wake = before;
    if (!woke) this.#closed = true;
    return woke;
  }

  /** What the loop with the supernode (p2p-run.ts) uses of this run. */
  #host(): P2pHost {
    return {
      req: this.#req,
      opts: this.#opts,
      c: this.#c,
      log: this.#log,
      wants: this.#wants,
      onWant: (wake) => {
        this.#wake = wake;
      },
      idle: (ms, signal) => this.#idle(ms, signal),
    };
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
      // Bytes found not to be the digest's (here or by the supernode) are not kept for anyone: not even a Range read;
      // nor pieces of an object that has changed at the origin since (the next run starts from a new probe, not
      // stitched onto them). A download that filled the disk gives its space back at once, and the cache makes room
      // for the next one.
      const diskFull = isDiskFull(err);
      const stale = isDigestMismatch(err) || isDamselflyError(err, 'ORIGIN_CHANGED');
      if ((stale || diskFull) && task && this.#c.store.get(this.taskId) === task) await this.#c.store.remove(this.taskId).catch(() => {});
      if (diskFull) this.#c.onDiskFull?.();
      this.#c.metrics.tasks.inc({ result: 'failed' });
      this.#log.warn({ err: describeError(err) }, 'task:failed');
      throw err;
    }
  }

  async #run(signal: AbortSignal): Promise<LocalTask> {
    const cached = await this.#c.store.current(this.taskId);
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
    /** The wants stated with the registration and what they were given, until the run with the supernode takes them. */
    let first: FirstWants | undefined;
    if (this.#c.pool.size > 0) {
      try {
        client = await this.#c.pool.clientFor(this.taskId, { signal });
        const registered = await this.#register(client, cached, digest, signal);
        first = registered;
        info = registered.info;
      } catch (err) {
        // (A registration that failed gave back what it was given itself.)
        signal.throwIfAborted();
        const refused = NOT_FOR_CLUSTER.has((err as { remoteCode?: string }).remoteCode ?? '');
        if (!(isDamselflyError(err, 'DF_SUPERNODE_UNAVAILABLE') || refused) || !this.#opts.backSource) throw clientError(err);
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
        // Without a digest, the version these pieces will be (pieces kept of another one are dropped on open).
        ...(!digest && probe.validator ? { validator: probe.validator } : {}),
      };
    }
    let task: LocalTask;
    try {
      task = await this.#c.store.open(info, displayUrl(this.#req.url));
    } catch (err) {
      first?.drop();
      throw err;
    }
    const lease = task.lease();
    try {
      // The reader's pieces are wanted before anyone waits on them: the assignments already made are fetched from
      // the reader's block.
      if (first?.pieces.length) this.#wants.add(first.pieces, this.#read?.start);
      this.#resolveOpened(task);
      if (client) {
        try {
          await runP2p(this.#host(), task, client, signal, first);
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

  /**
   * Registers the task with the supernode; a run started by a Range reader states the reader's pieces with it (see
   * RegisterRequest.want), and assignments pushed for them before the run with the supernode starts are kept for it.
   */
  async #register(client: SupernodeClient, cached: LocalTask | undefined, digest: string | undefined, signal: AbortSignal): Promise<FirstWants & { info: TaskInfo }> {
    const max = startInflight(this.#opts.parallelPieces).limit;
    const want = this.#read && !cached?.complete ? { start: this.#read.start, end: this.#read.end, max } : undefined;
    const pushed: Assignment[] = [];
    let got: RegisterReply['wanted'];
    const untake = want ? client.assignments(this.taskId, (list) => pushed.push(...list)) : () => {};
    /**
     * Gives the supernode back every assignment nobody will fetch (the run did not get to start), and withdraws the
     * wants the registration stated.
     */
    const drop = () => {
      untake();
      for (const a of [...(got?.assignments ?? []), ...pushed.splice(0)]) client.giveBack(this.taskId, a);
      if (got?.pieces.length) client.request({ type: 'pieces:want', taskId: this.taskId, want: [], max: 0 }, { timeoutMs: 5_000 }).catch(() => {});
    };
    try {
      const reply = await client.request<RegisterReply>(
        { type: 'task:register', url: this.#req.url.href, digest, headers: this.#req.headers, ...haveOf(cached), ...(want ? { want } : {}) },
        { signal },
      );
      // About this request's headers, not the task: said before anyone can ask for the client's access, and never
      // stored with the task; nor is what the registration's wants were given.
      const { accessChecked, wanted, ...info } = reply;
      got = want && info.taskId === this.taskId ? wanted : undefined;
      if (accessChecked === true) this.#c.onAccessChecked?.(this.#req.url, this.#req.headers);
      // Assignments under another task id than this run's (never, but nothing would fetch them) go back at once.
      if (wanted && !got) for (const a of wanted.assignments) client.giveBack(info.taskId, a);
      return { info, pieces: got?.pieces ?? [], max: got?.max ?? 0, assignments: got?.assignments ?? [], pushed, drop };
    } catch (err) {
      drop();
      throw err;
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
      const want = this.#wants.missing(task);
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
}

