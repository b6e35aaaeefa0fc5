/**
 * Preheat: before a rollout, an operator has the supernode fetch an image's blobs from the registry once, so the
 * pulls that follow cost the registry no blob bytes. A job resolves the image (manifest, index, platforms), registers
 * each blob as a task and seeds every piece of it (a few at once); with scope `all-peers` it then tells every
 * connected dfdaemon to fetch the blobs too, so the first container start on each node reads from local disk.
 * Jobs run in the background; their progress is kept in memory for the last few hundred jobs.
 */
import { randomUUID } from 'node:crypto';
import type { Dispatcher } from 'undici';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeError, isDamselflyError, pieceRange, redactUrl, taskIdFor, type Logger, type OriginAllowList } from '@damselfly/shared';
import { unreached, type Siblings } from './siblings.js';
import { snError } from '../errors.js';
import type { Seeder } from '../seed/seeder.js';
import type { TaskStore } from '../resource/task-store.js';
import { parseImageRef } from './image-ref.js';
import { resolveImage } from './manifest.js';

export type PreheatScope = 'supernode' | 'all-peers';

export interface PreheatRequest {
  image: string;
  platforms?: string[];
  scope: PreheatScope;
  headers?: Record<string, string>;
  /** Only these blobs of the image (digests): what another supernode of the cluster hands this one to seed. */
  blobs?: string[];
}

export interface PreheatLayer {
  digest: string;
  size: number;
  kind: 'config' | 'layer';
  platform?: string;
  taskId?: string;
  state: 'pending' | 'seeding' | 'seeded' | 'failed';
  pieces: { seeded: number; total: number };
  error?: string;
  /** The supernode of the cluster seeding it, when not the one answering (the one the dfdaemons ask for it). */
  supernode?: string;
}

export interface PreheatJob {
  id: string;
  image: string;
  scope: PreheatScope;
  platforms: string[];
  state: 'resolving' | 'seeding' | 'peers' | 'succeeded' | 'failed';
  createdAt: number;
  finishedAt?: number;
  /** The digest the reference resolved to. */
  digest?: string;
  layers: PreheatLayer[];
  bytes: { seeded: number; total: number };
  /** With scope all-peers: the dfdaemons told to fetch the blobs. */
  peers?: { asked: number };
  errors: string[];
}

export interface PreheatComponents {
  seeder: Seeder;
  store: TaskStore;
  origins: OriginAllowList;
  dispatcher: Dispatcher;
  /** Tells every connected dfdaemon to fetch these blob URLs; returns how many were told. */
  toPeers: (blobs: { url: string; digest: string }[]) => number;
  log: Logger;
  /** The cluster's other supernodes (clusterSupernodes): each blob is seeded on its own. */
  siblings?: Siblings;
}

/** How often a job polls the jobs it handed to other supernodes. */
const POLL_MS = 500;
/** Polls in a row another supernode may fail before its part of the job is failed. */
const POLL_FAILURES = 6;
/** How long a job's status waits for the other supernodes when it is not here. */
const FIND_MS = 5_000;

/** Pieces seeded at once per job. */
const PARALLEL = 4;
/** Jobs remembered. */
const KEEP = 200;

export class PreheatJobs {
  readonly #jobs = new Map<string, PreheatJob>();
  readonly #c: PreheatComponents;
  readonly #stop = new AbortController();

  constructor(c: PreheatComponents) {
    this.#c = c;
  }

  /** Checks the request, starts the job in the background, and returns it at once. */
  start(body: unknown): PreheatJob {
    const req = checkRequest(body);
    const ref = parseImageRef(req.image);
    if (!this.#c.origins.allows(new URL(ref.registry))) throw snError('SN_ORIGIN_FORBIDDEN', `${ref.registry} (add it to allowedOrigins)`);
    const job: PreheatJob = { id: randomUUID(), image: req.image, scope: req.scope, platforms: req.platforms ?? [], state: 'resolving', createdAt: Date.now(), layers: [], bytes: { seeded: 0, total: 0 }, errors: [] };
    this.#jobs.set(job.id, job);
    for (const old of this.#jobs.keys()) {
      if (this.#jobs.size <= KEEP) break;
      if (this.#jobs.get(old)!.finishedAt) this.#jobs.delete(old);
    }
    void this.#run(job, ref, req).catch((err: unknown) => {
      job.state = 'failed';
      job.errors.push(describeError(err));
      job.finishedAt = Date.now();
      this.#c.log.warn({ job: job.id, image: job.image, err: describeError(err) }, 'preheat:failed');
    });
    return job;
  }

  get(id: string): PreheatJob {
    const job = this.#jobs.get(id);
    if (!job) throw snError('SN_PREHEAT_NOT_FOUND', id);
    return job;
  }

  /**
   * A job by id, from this supernode or, behind a Service with several, from the one that took it: the others are
   * asked at once, for a few seconds at most (`ask` is false for a call another supernode forwarded, which is not
   * asked on). None has it: 404; none has it and one could not be asked: 502, since that one may.
   */
  async find(id: string, { ask }: { ask: boolean }): Promise<PreheatJob> {
    const here = this.#jobs.get(id);
    if (here || !ask || !this.#c.siblings) return here ?? this.get(id);
    const siblings = this.#c.siblings;
    // A timer of our own, held here and cleared: not AbortSignal.timeout, whose timer can be collected mid-wait.
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(snError('SN_SIBLING', `no answer within ${FIND_MS} ms`)), FIND_MS);
    try {
      const answers = await Promise.allSettled(siblings.others.map((base) => siblings.call<PreheatJob>(base, 'GET', `/api/v1/preheat/${encodeURIComponent(id)}`, undefined, { signal: ac.signal, forwarded: true })));
      const found = answers.find((a) => a.status === 'fulfilled' && a.value.status === 200);
      if (found) return (found as PromiseFulfilledResult<{ body: PreheatJob }>).value.body;
      const failed = answers.find((a) => a.status === 'rejected' || (a.value.status !== 404 && a.value.status !== 200));
      if (failed) throw snError('SN_SIBLING', `job ${id} is not here, and ${failed.status === 'rejected' ? describeError(failed.reason) : `a supernode answered ${failed.value.status}`}: it may be there`);
      return this.get(id);
    } finally {
      clearTimeout(timer);
    }
  }

  list(): PreheatJob[] {
    return [...this.#jobs.values()].reverse();
  }

  stop(): void {
    this.#stop.abort(snError('SN_SHUTTING_DOWN'));
  }

  async #run(job: PreheatJob, ref: ReturnType<typeof parseImageRef>, req: PreheatRequest): Promise<void> {
    const signal = this.#stop.signal;
    const image = await resolveImage(ref, { platforms: req.platforms, headers: req.headers ?? {}, dispatcher: this.#c.dispatcher, signal });
    const blobs = req.blobs ? image.blobs.filter((b) => req.blobs!.includes(b.digest)) : image.blobs;
    // Handed a part by another supernode: a digest it named that this image does not have is said, not dropped.
    for (const missing of (req.blobs ?? []).filter((d) => !image.blobs.some((b) => b.digest === d))) job.errors.push(`${missing}: not in ${image.digest}`);
    job.digest = image.digest;
    job.platforms = image.platforms;
    job.layers = blobs.map((b) => ({ digest: b.digest, size: b.size, kind: b.kind, ...(b.platform ? { platform: b.platform } : {}), state: 'pending', pieces: { seeded: 0, total: 0 } }));
    job.bytes.total = blobs.reduce((s, b) => s + b.size, 0);
    job.state = 'seeding';
    this.#c.log.info({ job: job.id, image: job.image, digest: image.digest, blobs: blobs.length, bytes: job.bytes.total }, 'preheat:resolved');
    const blobUrl = (digest: string) => new URL(`${ref.registry}/v2/${ref.repository}/blobs/${digest}`);
    // Each blob on the supernode the dfdaemons will ask for it; a job handed here by another supernode is all ours.
    const siblings = req.blobs ? undefined : this.#c.siblings;
    const elsewhere = new Map<string, PreheatLayer[]>();
    const here: PreheatLayer[] = [];
    for (const layer of job.layers) {
      const owner = siblings?.owner(taskIdFor(blobUrl(layer.digest), layer.digest));
      if (!owner || owner === siblings!.self) here.push(layer);
      else elsewhere.set(owner, [...(elsewhere.get(owner) ?? []), layer]);
    }
    const seedHere = (layers: PreheatLayer[]) => this.#seed(job, layers, ref, req, image.headers, blobUrl, signal);
    await Promise.all([
      seedHere(here),
      ...[...elsewhere].map(([owner, layers]) =>
        // A supernode that plainly did not take its part (unreachable, or it refused) leaves it to this one: seeded
        // still, where the dfdaemons' stand-in order may not look first, rather than not at all. One that may have
        // taken it (an answer lost) is not doubled: its part fails instead (see #handOff).
        this.#handOff(job, owner, layers, { ...req, image: `${ref.registry}/${ref.repository}@${image.digest}` }, signal).catch((err: unknown) => {
          signal.throwIfAborted();
          this.#c.log.warn({ job: job.id, supernode: owner, err: describeError(err) }, 'preheat:hand-off-refused');
          return seedHere(layers);
        }),
      ),
    ]);
    // Every layer ends seeded or failed: one left in between (a path that forgot it) is not reported as a success.
    for (const layer of job.layers) if (layer.state !== 'seeded' && layer.state !== 'failed') fail(job, layer, 'left unseeded');
    if (job.scope === 'all-peers' && !job.errors.length) {
      job.state = 'peers';
      const told = this.#c.toPeers(job.layers.map((l) => ({ url: blobUrl(l.digest).href, digest: l.digest })));
      job.peers = { asked: told };
    }
    job.state = job.errors.length ? 'failed' : 'succeeded';
    job.finishedAt = Date.now();
    this.#c.log.info({ job: job.id, image: redactUrl(job.image), state: job.state, seconds: (job.finishedAt - job.createdAt) / 1000 }, 'preheat:done');
  }

  /** Registers `layers` here and seeds every piece of them, a few at a time across all of them. */
  async #seed(job: PreheatJob, layers: PreheatLayer[], ref: ReturnType<typeof parseImageRef>, req: PreheatRequest, resolvedHeaders: Record<string, string>, blobUrl: (digest: string) => URL, signal: AbortSignal): Promise<void> {
    if (!layers.length) return;
    const requester = `preheat:${job.id}`;
    // The registry's token may run out during a long job (Docker Hub's last 5 minutes): a piece refused with the
    // current headers gets them renewed from the operator's own credentials (one renewal at a time, shared by every
    // worker) and is asked for once more.
    let headers = resolvedHeaders;
    let renewing: Promise<void> | undefined;
    const renew = (failedWith: Record<string, string>): Promise<void> => {
      if (headers !== failedWith) return Promise.resolve();
      renewing ??= resolveImage(ref, { platforms: req.platforms, headers: req.headers ?? {}, dispatcher: this.#c.dispatcher, signal })
        .then((fresh) => void (headers = fresh.headers))
        .finally(() => (renewing = undefined));
      return renewing;
    };
    // Register every blob first (sizes, piece counts), then seed their pieces a few at a time across all of them.
    const work: { layer: PreheatLayer; url: URL; taskId: string; n: number; size: number }[] = [];
    for (const layer of layers) {
      const url = blobUrl(layer.digest);
      try {
        const meta = await this.#c.seeder.register(url, layer.digest, headers, { signal, requester });
        layer.taskId = meta.taskId;
        layer.pieces.total = meta.pieceCount;
        for (let n = 0; n < meta.pieceCount; n++) {
          const { start, end } = pieceRange(n, meta.pieceSize, meta.contentLength);
          const size = end - start + 1;
          if (this.#c.store.pieceSha(meta.taskId, n) !== undefined) {
            layer.pieces.seeded++;
            job.bytes.seeded += size;
          } else work.push({ layer, url, taskId: meta.taskId, n, size });
        }
        layer.state = layer.pieces.seeded === layer.pieces.total ? 'seeded' : 'seeding';
      } catch (err) {
        signal.throwIfAborted();
        fail(job, layer, err);
      }
    }
    let next = 0;
    const worker = async () => {
      while (next < work.length) {
        const w = work[next++]!;
        if (w.layer.state === 'failed') continue;
        try {
          for (let attempt = 0; ; attempt++) {
            const used = headers;
            // Said again before each piece: the seeder lets go of credentials unused for a while (a layer queued
            // behind big ones would find them gone), and this is how renewed ones reach it.
            await this.#c.seeder.register(w.url, w.layer.digest, used, { signal, requester });
            try {
              await this.#c.seeder.ensurePiece(w.taskId, w.n, { signal, requester });
              break;
            } catch (err) {
              if (attempt > 0 || !isDamselflyError(err, 'ORIGIN_AUTH')) throw err;
              await renew(used);
            }
          }
          w.layer.pieces.seeded++;
          job.bytes.seeded += w.size;
          if (w.layer.pieces.seeded === w.layer.pieces.total) w.layer.state = 'seeded';
        } catch (err) {
          signal.throwIfAborted();
          fail(job, w.layer, err);
        }
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
    // The operator's credentials were for this job only: the seeder lets go of them now, not at its idle timeout.
    for (const layer of layers) if (layer.taskId) this.#c.seeder.forget(layer.taskId, requester);
  }

  /**
   * Hands `layers` to the supernode that owns them: the same request, pinned to the manifest this job resolved (a
   * moved tag cannot change what it seeds) and narrowed to them; that supernode resolves it itself and seeds them as
   * its own job, which this one follows, copying its layers' progress. Rejects only when that supernode plainly did
   * not take the job (no connection, or it refused it): the caller then seeds them here. Anything after it may have
   * been taken fails the layers it left unseeded, rather than seeding them twice.
   */
  async #handOff(job: PreheatJob, owner: string, layers: PreheatLayer[], req: PreheatRequest, signal: AbortSignal): Promise<void> {
    const siblings = this.#c.siblings!;
    const body: PreheatRequest = { image: req.image, scope: 'supernode', blobs: layers.map((l) => l.digest), ...(req.platforms ? { platforms: req.platforms } : {}), ...(req.headers ? { headers: req.headers } : {}) };
    let started: { status: number; body: PreheatJob & { message?: string } };
    try {
      started = await siblings.call<PreheatJob & { message?: string }>(owner, 'POST', '/api/v1/preheat', body, { signal });
    } catch (err) {
      signal.throwIfAborted();
      if (unreached(err)) throw err;
      for (const layer of layers) fail(job, layer, err);
      return;
    }
    if (started.status !== 202) throw snError('SN_SIBLING', `${owner} refused the job (${started.status}): ${started.body.message ?? ''}`);
    const { id } = started.body;
    for (const layer of layers) {
      layer.supernode = owner;
      layer.state = 'seeding';
    }
    // What this part adds to the job's bytes: the owner's count, never more than these layers (an owner of an older
    // version seeding the whole image must not push the job past its total).
    const most = layers.reduce((sum, l) => sum + l.size, 0);
    let counted = 0;
    const count = (bytes: number) => {
      const now = Math.min(bytes, most);
      job.bytes.seeded += now - counted;
      counted = now;
    };
    try {
      for (let failures = 0; ; ) {
        await sleep(POLL_MS, undefined, { signal });
        let remote: PreheatJob;
        try {
          const r = await siblings.call<PreheatJob>(owner, 'GET', `/api/v1/preheat/${encodeURIComponent(id)}`, undefined, { signal, forwarded: true });
          if (r.status !== 200) throw snError('SN_SIBLING', `${owner} answered ${r.status} for job ${id}`);
          remote = r.body;
          failures = 0;
        } catch (err) {
          signal.throwIfAborted();
          if (++failures < POLL_FAILURES) continue;
          throw err;
        }
        for (const theirs of remote.layers ?? []) {
          const layer = layers.find((l) => l.digest === theirs.digest);
          if (!layer || layer.state === 'failed') continue;
          layer.taskId = theirs.taskId;
          layer.pieces = theirs.pieces;
          if (theirs.state === 'failed') fail(job, layer, `${owner}: ${theirs.error ?? 'failed'}`);
          else layer.state = theirs.state === 'pending' ? 'seeding' : theirs.state;
        }
        count(remote.bytes?.seeded ?? 0);
        if (remote.finishedAt) {
          for (const e of remote.errors ?? []) if (!layers.some((l) => e.startsWith(l.digest))) job.errors.push(`${owner}: ${e}`);
          // Done there: a layer it did not report seeded is not seeded, whatever it said of the job.
          for (const layer of layers) if (layer.state !== 'seeded') fail(job, layer, `${owner} ended its job without it`);
          return;
        }
      }
    } catch (err) {
      signal.throwIfAborted();
      for (const layer of layers) if (layer.state !== 'seeded') fail(job, layer, err);
    }
  }
}

/** Marks a layer failed and reports it once (several workers, or polls, may see it fail). */
function fail(job: PreheatJob, layer: PreheatLayer, err: unknown): void {
  if (layer.state === 'failed' && layer.error !== undefined) return;
  layer.state = 'failed';
  layer.error = typeof err === 'string' ? err : describeError(err);
  job.errors.push(`${layer.digest}: ${layer.error}`);
}

function checkRequest(body: unknown): PreheatRequest {
  const bad = (why: string) => snError('SN_BAD_PREHEAT', `${why}; send {"image": "registry/repo:tag", "platforms"?: ["linux/amd64"], "scope"?: "supernode" | "all-peers", "headers"?: {...}}`);
  if (typeof body !== 'object' || body === null) throw bad('no JSON body');
  const b = body as Record<string, unknown>;
  if (typeof b.image !== 'string' || !b.image) throw bad('"image" must be a string');
  const scope = b.scope ?? 'supernode';
  if (scope !== 'supernode' && scope !== 'all-peers') throw bad(`unknown scope ${JSON.stringify(scope)}`);
  let platforms: string[] | undefined;
  if (b.platforms !== undefined) {
    if (!Array.isArray(b.platforms) || !b.platforms.every((p) => typeof p === 'string' && /^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/.test(p))) throw bad('"platforms" must be a list like ["linux/amd64", "linux/arm64/v8"]');
    platforms = b.platforms as string[];
  }
  const headers: Record<string, string> = {};
  if (b.headers !== undefined) {
    if (typeof b.headers !== 'object' || b.headers === null || Array.isArray(b.headers)) throw bad('"headers" must be an object of strings');
    for (const [k, v] of Object.entries(b.headers)) {
      if (typeof v !== 'string') throw bad('"headers" must be an object of strings');
      headers[k] = v;
    }
  }
  let blobs: string[] | undefined;
  if (b.blobs !== undefined) {
    if (!Array.isArray(b.blobs) || !b.blobs.every((d) => typeof d === 'string' && /^sha256:[a-f0-9]{64}$/.test(d))) throw bad('"blobs" must be a list of sha256 digests');
    blobs = b.blobs as string[];
  }
  return { image: b.image, scope, ...(platforms ? { platforms } : {}), headers, ...(blobs ? { blobs } : {}) };
}
