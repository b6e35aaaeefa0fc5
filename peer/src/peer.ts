/**
 * The peer's download manager: one Conductor per task at a time, shared by every reader of that task (proxy
 * requests, dfget), and the dependencies they need.
 */
import { setMaxListeners } from 'node:events';
import { RateMeters, TokenBucket, aborted, describeError, taskIdFor, type ByteRange } from '@damselfly/shared';
import { Conductor, type ConductorComponents, type ConductorOptions, type DownloadRequest, type NodeLimits } from './conductor.js';
import type { LocalTask } from './local-task.js';
import { peerError } from './errors.js';

export interface Download {
  /** The cache entry, as soon as the blob's size is known. */
  task: LocalTask;
  /** Resolves when the run ends: for a whole-blob download, when the blob is present and verified. */
  done: Promise<LocalTask>;
  /**
   * Asks for pieces (or `all`); false if the run already ended: call `download` again. `startAt`: the byte the reader
   * needs first, so the piece holding it is fetched starting with its block.
   */
  want(pieces: readonly number[] | 'all', startAt?: number): boolean;
}

/** What a node gives its peer engine; the per-source meters and the limits are the engine's own. */
export type PeerComponents = Omit<ConductorComponents, 'sources' | 'limits'>;

export class Peer {
  readonly #opts: ConductorOptions;
  readonly #c: ConductorComponents & Required<Pick<ConductorComponents, 'sources' | 'limits'>>;
  readonly #running = new Map<string, { conductor: Conductor; done: Promise<LocalTask> }>();
  readonly #stop = new AbortController();

  constructor(opts: ConductorOptions, components: PeerComponents) {
    this.#opts = opts;
    // One set of per-source meters for every task of this node: a source's uplink is shared across tasks too.
    // Limits are per node, shared by every task: a node pulling many blobs still stays within them.
    const limits = { download: new TokenBucket(opts.downloadRate ?? 0), backSource: new TokenBucket(opts.backSourceRate ?? 0) };
    this.#c = { sources: new RateMeters(), limits, ...components };
    setMaxListeners(0, this.#stop.signal);
  }

  /** The node's download limits (shared by every task), for metrics. */
  get limits(): NodeLimits {
    return this.#c.limits;
  }

  /**
   * Starts (or joins) the download of `req`. Resolves once the blob's size is known; the download itself runs on
   * even if this caller goes away, so other readers and peers still get it. With `whole: false` nothing is fetched
   * until the caller says which pieces it wants (`Download.want`), as a Range reader does; `read`, the bytes such a
   * reader asks for (as far as its Range header says before the blob's size is known), lets a new run state its first
   * wants with its registration.
   */
  async download(req: DownloadRequest, { signal, whole = true, read }: { signal?: AbortSignal; whole?: boolean; read?: ByteRange } = {}): Promise<Download> {
    if (this.#stop.signal.aborted) throw peerError('DF_SHUTTING_DOWN');
    // Joining a run costs a lookup, not a new conductor (a Range read's first block waits on this).
    let run = this.#running.get(taskIdFor(req.url, req.digest));
    if (run && !run.conductor.want(whole ? 'all' : [])) run = undefined;
    if (!run) {
      const conductor = new Conductor(req, this.#opts, this.#c, whole, read);
      const done = conductor.run({ signal: this.#stop.signal }).finally(() => {
        if (this.#running.get(conductor.taskId)?.conductor === conductor) this.#running.delete(conductor.taskId);
      });
      done.catch((err) => this.#c.log.debug({ taskId: conductor.taskId, err: describeError(err) }, 'download:ended'));
      run = { conductor, done };
      this.#running.set(conductor.taskId, run);
    }
    const opened = run.conductor.opened;
    const task = await (signal ? Promise.race([opened, aborted(signal)]) : opened);
    const conductor = run.conductor;
    return { task, done: run.done, want: (pieces, startAt) => conductor.want(pieces, startAt) };
  }

  /** Whether a download of the task is running (it has registered with a supernode, or is about to). */
  running(taskId: string): boolean {
    return this.#running.has(taskId);
  }

  /** Aborts every running download and waits for them to settle. */
  async stop(): Promise<void> {
    this.#stop.abort(peerError('DF_SHUTTING_DOWN'));
    await Promise.allSettled([...this.#running.values()].map((r) => r.done));
  }
}
