/**
 * Several supernodes: each task goes to the one that ranks first for its id by rendezvous hashing, so adding a
 * supernode moves only its share of tasks, and every peer of a task meets on the same supernode. A supernode that
 * fails is skipped for a short back-off and the next in rank is used.
 */
import { describeError, rendezvous, type Logger, type Trust } from '@damselfly/shared';
import { SupernodeClient, type HelloInfo } from './supernode-client.js';
import { peerError } from './errors.js';

const BACKOFF_MS = 5_000;

export class SupernodePool {
  readonly #urls: readonly string[];
  readonly #hello: HelloInfo;
  readonly #log: Logger;
  readonly #trust: Trust | undefined;
  readonly #clients = new Map<string, Promise<SupernodeClient>>();
  readonly #downUntil = new Map<string, number>();
  /** Preheat pushes from any supernode go here. */
  #onPreheat?: (blobs: { url: string; digest: string }[]) => void;
  /** Stay connected to every supernode (reconnecting after a loss), so preheats reach this node. */
  #keep = false;
  readonly #timers = new Set<NodeJS.Timeout>();

  constructor(urls: readonly string[], hello: HelloInfo, log: Logger, trust?: Trust) {
    this.#urls = urls;
    this.#hello = hello;
    this.#log = log;
    this.#trust = trust;
  }

  /**
   * Connects to every supernode now and again whenever a connection is lost (after a back-off), instead of at the
   * first task: a node that has pulled nothing yet is still reachable for `all-peers` preheats, which go to `onPreheat`.
   */
  stayConnected(onPreheat: (blobs: { url: string; digest: string }[]) => void): void {
    this.#onPreheat = onPreheat;
    this.#keep = true;
    for (const url of this.#urls) this.#reconnect(url, 0);
  }

  #reconnect(url: string, delayMs: number): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (!this.#keep || this.#clients.has(url)) return;
      this.#client(url).catch((err) => {
        this.#log.debug({ supernode: url, err: describeError(err) }, 'supernode:unreachable');
        this.#reconnect(url, BACKOFF_MS);
      });
    }, delayMs);
    timer.unref();
    this.#timers.add(timer);
  }

  get size(): number {
    return this.#urls.length;
  }

  /** Supernode URLs in rendezvous order for `taskId`. */
  rank(taskId: string): string[] {
    return rendezvous(this.#urls, taskId);
  }

  /** A connected client for the task's supernode, trying the others in rank order. */
  async clientFor(taskId: string, { signal }: { signal?: AbortSignal } = {}): Promise<SupernodeClient> {
    const errors: string[] = [];
    for (const url of this.rank(taskId)) {
      if ((this.#downUntil.get(url) ?? 0) > Date.now()) {
        errors.push(`${url}: backing off`);
        continue;
      }
      try {
        return await this.#client(url, signal);
      } catch (err) {
        signal?.throwIfAborted();
        errors.push(describeError(err));
        this.markDown(url);
      }
    }
    throw peerError('DF_SUPERNODE_UNAVAILABLE', errors.join('; ') || 'none configured');
  }

  /**
   * Sends a notification about `taskId` to its supernode if a connection to it is open (a dropped piece, a left
   * task); with none open there is nothing to correct: the supernode dropped this peer's state when it went.
   */
  notify(taskId: string, body: { type: string } & Record<string, unknown>): void {
    for (const url of this.rank(taskId)) {
      const p = this.#clients.get(url);
      if (!p) continue;
      void p.then((c) => c.notify(body), () => {});
      return;
    }
  }

  markDown(url: string): void {
    this.#downUntil.set(url, Date.now() + BACKOFF_MS);
  }

  close(): void {
    this.#keep = false;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    for (const p of this.#clients.values()) p.then((c) => c.close(), () => {});
    this.#clients.clear();
  }

  #client(url: string, signal?: AbortSignal): Promise<SupernodeClient> {
    let p = this.#clients.get(url);
    if (!p) {
      const c = new SupernodeClient(url, this.#hello, this.#trust);
      c.on('task:preheat', (blobs) => this.#onPreheat?.(blobs));
      p = c.connect({ signal }).then(() => c);
      this.#clients.set(url, p);
      c.once('close', () => {
        if (this.#clients.get(url) === p) this.#clients.delete(url);
        this.#log.warn({ supernode: url }, 'supernode:disconnected');
        if (this.#keep) this.#reconnect(url, BACKOFF_MS);
      });
      p.catch(() => {
        if (this.#clients.get(url) === p) this.#clients.delete(url);
      });
    }
    return p;
  }
}
