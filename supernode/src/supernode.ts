/** Wires the supernode's parts together and runs them (`start()`/`stop()`). */
import { randomBytes } from 'node:crypto';
import { AddressPolicy, advertiseHost, BufferPool, GcRunner, RateMeter, originFastPath, type OriginFastPath, OriginAllowList, cidrList, createLogger, createOriginDispatcher, effectiveQuota, guardedConnector, listenAs, startOrUndo, type Logger } from '@damselfly/shared';
import type { FastifyInstance } from 'fastify';
import type { AddressInfo } from 'node:net';
import type { SupernodeConfig } from './config.js';
import { TaskStore } from './resource/task-store.js';
import { Seeder } from './seed/seeder.js';
import { Scheduler } from './scheduling/scheduler.js';
import { SUPERNODE, type SchedulePolicy } from './scheduling/policy.js';
import { SlotTuner } from './scheduling/slot-tuner.js';
import { createSupernodeMetrics, type SupernodeMetrics } from './metrics.js';
import { Demands } from './scheduling/demands.js';
import { buildServer } from './api/server.js';
import { Traffic } from './api/traffic.js';
import { PreheatJobs } from './preheat/jobs.js';
import { Siblings } from './preheat/siblings.js';
import { collectSupernodeGarbage, type SupernodeGcResult } from './resource/gc.js';

export interface SupernodeComponents {
  log?: Logger;
  policy?: SchedulePolicy;
}

export class Supernode {
  readonly config: Readonly<SupernodeConfig>;
  readonly log: Logger;
  readonly metrics: SupernodeMetrics;
  readonly store: TaskStore;
  readonly scheduler: Scheduler;
  readonly seeder: Seeder;
  readonly #dispatcher;
  /** The cluster's other supernodes, for preheat (clusterSupernodes; absent: this one alone). */
  readonly #siblings?: Siblings;
  readonly #originFast: OriginFastPath;
  /** What each peer wants in each task: sources are pushed to it as they become possible. */
  readonly demands: Demands;
  #flushDue = false;
  #app?: FastifyInstance;
  #sweeper?: NodeJS.Timeout;
  #tuner?: NodeJS.Timeout;
  /** What the supernode's uplink carries (piece bytes served), for tuning its upload slots. */
  readonly #served = new RateMeter();
  /** Preheat jobs (POST /api/v1/preheat). */
  readonly preheat: PreheatJobs;
  /** Connected dfdaemons: peer id → push a message to it. */
  readonly #pushers = new Map<string, (msg: object) => void>();
  /** Pieces being served, with when each last sent a byte. */
  readonly #streams = new Set<{ last: number }>();
  /** Where bytes came from, for the dashboard. */
  readonly traffic = new Traffic();
  #sampler?: NodeJS.Timeout;
  #gcTimer?: NodeJS.Timeout;
  readonly #gc = new GcRunner<SupernodeGcResult>((now, pressure) => this.#gcPass(now, pressure));
  /** diskQuota, or half the filesystem when it is 0 (resolved at the first GC pass). */
  #quota?: number;
  #url = '';

  constructor(config: Readonly<SupernodeConfig>, components: SupernodeComponents = {}) {
    this.config = config;
    this.log = components.log ?? createLogger('supernode', config.logLevel);
    this.metrics = createSupernodeMetrics();
    this.store = new TaskStore(config.dataDir);
    // Every origin connection, redirect hops included, is checked against the address policy at connect time,
    // and each gets its origin's TLS settings (a registry's own CA, or no verification where the operator said so).
    const policy = new AddressPolicy(config.originAllowCidrs);
    if (config.clusterSupernodes.length) this.#siblings = new Siblings(config.clusterSupernodes, config.advertiseUrl!, config.trust);
    this.#dispatcher = createOriginDispatcher({ connect: config.originTls.connector((extra) => guardedConnector(policy, extra)) });
    // Piece bytes from origins that answer plainly: the same policy and TLS settings, socket reads into reused buffers.
    this.#originFast = originFastPath(policy, config.originTls);
    this.scheduler = new Scheduler({
      supernodeSlots: config.uploadSlots,
      peerSlots: config.peerUploadSlots,
      failuresBeforeBlacklist: config.failuresBeforeBlacklist,
      streamRate: config.uploadStreamRate,
      policy: components.policy,
      hashed: (taskId, n) => this.store.pieceSha(taskId, n) !== undefined,
    });
    // Changes are offered to waiting peers once per turn of the event loop, however many happened in it.
    this.demands = new Demands(this.scheduler, {
      onMarked: () => {
        if (this.#flushDue) return;
        this.#flushDue = true;
        setImmediate(() => {
          this.#flushDue = false;
          this.demands.flush();
        });
      },
    });
    const origins = new OriginAllowList(config.allowedOrigins);
    this.seeder = new Seeder(
      {
        originConcurrency: config.originConcurrency,
        originConcurrencyPerHost: config.originConcurrencyPerHost,
        originMinRate: config.originMinRate,
        originTimeoutMs: config.originTimeoutSeconds * 1000,
        maxBlobSize: config.maxBlobSize,
        minPieceSize: config.minPieceSize,
        originRate: config.originRate,
      },
      {
      store: this.store,
      dispatcher: this.#dispatcher,
      originFast: this.#originFast,
      origins,
      log: this.log,
      originBytes: this.metrics.originBytes,
      digestBytes: this.metrics.digestBytes,
      onPoisoned: (taskId) => {
        this.metrics.digestMismatches.inc();
        this.#leaveSwarm(taskId);
      },
      onDropped: (taskId) => this.#leaveSwarm(taskId),
      onRecorded: (taskId) => this.scheduler.wake(taskId),
      onDiskFull: () => this.relieveDiskPressure(),
    });
    this.preheat = new PreheatJobs({
      seeder: this.seeder,
      store: this.store,
      origins,
      dispatcher: this.#dispatcher,
      log: this.log,
      toPeers: (blobs) => {
        for (const push of this.#pushers.values()) push({ type: 'task:preheat', blobs });
        return this.#pushers.size;
      },
      ...(this.#siblings ? { siblings: this.#siblings } : {}),
    });
    this.metrics.originRateLimit.set(config.originRate);
    this.scheduler.on('peer:blacklisted', ({ taskId, peerId, reason }) => {
      this.metrics.blacklisted.inc({ reason: reason.includes('corrupt') ? 'corrupt' : reason.startsWith('discredited') ? 'discredited' : 'failures' });
      this.log.warn({ taskId, peerId, reason }, 'peer:blacklisted');
    });
    this.scheduler.on('peer:reinstated', ({ taskId, peerId }) => this.log.warn({ taskId, peerId }, 'peer:reinstated'));
    this.scheduler.on('peer:discredited', ({ taskId, peerId, contested }) => this.log.warn({ taskId, peerId, contested }, 'peer:discredited'));
  }

  /**
   * Serves as few pieces at once as keep the uplink full (see slot-tuner), re-tuned twice a second. The tuned count
   * is for streams that send; streams still waiting for their first block (a slow origin) come on top, up to
   * uploadSlots: they hold no bandwidth, and a few dripping origins must not take the uplink's slots from everyone.
   */
  #tuneSlots(): void {
    const tuner = new SlotTuner(this.config.uploadSlots, this.config.uploadStreamRate);
    this.metrics.uploadSlots.set(tuner.slots);
    if (this.config.uploadStreamRate <= 0) return;
    const apply = () => {
      const now = performance.now();
      let waiting = 0;
      for (const s of this.#streams) if (s.last === -Infinity) waiting++;
      const tuned = tuner.next(this.#streams.size - waiting, this.#served.rate(now), now, this.scheduler.flowRate());
      const slots = Math.min(this.config.uploadSlots, tuned + waiting);
      if (slots !== this.scheduler.slots(SUPERNODE)) this.scheduler.setSlots(SUPERNODE, slots);
      this.metrics.uploadSlots.set(tuned);
    };
    this.scheduler.setSlots(SUPERNODE, tuner.slots);
    this.#tuner = setInterval(apply, 500).unref();
  }

  /** Base URL of this supernode (after `start()`): `advertiseUrl`, or where other hosts reach it. */
  get url(): string {
    return this.#url;
  }

  /** Where a process on this host reaches it (after `start()`): loopback for a wildcard bind, whatever it announces. */
  get localUrl(): string {
    return this.#localUrl;
  }
  #localUrl = '';

  /** Starts every part in order; if one fails (the port in use), what started is stopped again. */
  start(): Promise<void> {
    return startOrUndo(() => this.#start(), () => this.stop());
  }

  async #start(): Promise<void> {
    await this.store.start();
    // Private blobs are cached there: an operator must learn that other local users may read them.
    for (const dir of this.store.exposed) this.log.warn({ dir }, 'store:exposed');
    const { trust } = this.config;
    if (!trust.secret) {
      if (trust.insecure) this.log.warn({ host: this.config.host }, 'supernode:INSECURE: no cluster secret, anyone who reaches this port can join the cluster, read every cached blob and make the supernode fetch from allowed origins');
      else this.log.info('supernode: no cluster secret; listening on loopback only');
    }
    if (this.config.allowedOrigins.length === 0) this.log.warn('supernode: allowedOrigins is empty, so no origin will be seeded from');
    for (const host of this.config.originTls.insecureHosts) {
      this.log.warn({ host }, 'supernode:INSECURE: TLS certificates of this origin are NOT verified: anyone on the network path can serve its blobs (the digest check still catches wrong bytes of digest-named blobs)');
    }
    this.#app = buildServer({
      scheduler: this.scheduler,
      seeder: this.seeder,
      store: this.store,
      metrics: this.metrics,
      log: this.log,
      trust,
      sessions: new Map(),
      probes: new Map(),
      // Without a cluster secret the supernode still signs its own piece grants, with a key nobody else knows.
      grantKey: trust.secret ?? randomBytes(32),
      advertiseCidrs: cidrList(this.config.advertiseCidrs),
      limits: { maxTasks: this.config.sessionMaxTasks, rate: this.config.sessionRate },
      // One 256 KiB buffer per piece being served at most: 32 MiB for the default 64 slots (twice that served).
      pool: new BufferPool(256 * 1024, this.config.uploadSlots * 2),
      servingCap: this.config.uploadSlots * 2,
      demands: this.demands,
      served: this.#served,
      streams: this.#streams,
      traffic: this.traffic,
      pushers: this.#pushers,
      preheat: this.preheat,
      metricsOpen: this.config.metricsOpen,
    });
    const app = this.#app;
    await listenAs('port', this.config.host, this.config.port, () => app.listen({ host: this.config.host, port: this.config.port }));
    const addr = this.#app.server.address() as AddressInfo;
    const scheme = trust.tls?.cert ? 'https' : 'http';
    // The URL it names itself by (peers fetch its pieces where they connected to it): on a wildcard bind, an address
    // other hosts can reach, for an operator to give them.
    this.#url = this.config.advertiseUrl ?? `${scheme}://${advertiseHost(this.config.host)}:${addr.port}`;
    const wildcard = this.config.host === '0.0.0.0' || this.config.host === '::';
    this.#localUrl = `${scheme}://${wildcard ? '127.0.0.1' : advertiseHost(this.config.host)}:${addr.port}`;
    this.#tuneSlots();
    // The dashboard's history: origin, supernode and peer bytes per second.
    this.#sampler = setInterval(() => {
      void Promise.all([this.metrics.originBytes.get(), this.metrics.servedBytes.get()]).then(([o, s]) =>
        this.traffic.sample(Date.now(), o.values[0]?.value ?? 0, s.values[0]?.value ?? 0),
      );
    }, 1000).unref();
    this.#sweeper = setInterval(() => {
      this.scheduler.sweep();
      this.seeder.sweep();
      // A safety net, not a poll: every change already offers itself to waiting peers as it happens.
      this.demands.markAll();
    }, 5_000).unref();
    this.#gcTimer = setInterval(() => void this.gc().catch((err) => this.log.warn({ err: String(err) }, 'gc:failed')), this.config.gcIntervalSeconds * 1000).unref();
    await this.gc();
    this.log.info({ url: this.#url, dataDir: this.config.dataDir }, 'supernode:started');
  }

  /** One disk GC pass (quota watermarks, TTL), or the one under way, never touching a task in use; refreshes the cache metrics. */
  gc(now = Date.now()): Promise<SupernodeGcResult> {
    return this.#gc.run(now);
  }

  /** A write found the disk full: shrink the cache to make room now (see GcRunner). */
  relieveDiskPressure(): Promise<SupernodeGcResult> {
    this.metrics.diskFull.inc();
    return this.#gc.relieve();
  }

  /**
   * A task left the store (its bytes were not its digest's, GC evicted it): its swarm, the demands in it and its
   * traffic history go too, or a later flush would bring an empty swarm for it back into the scheduler.
   */
  #leaveSwarm(taskId: string): void {
    this.scheduler.dropTask(taskId);
    this.demands.forget(taskId);
    this.traffic.forgetTask(taskId);
  }

  async #gcPass(now: number, pressure: boolean): Promise<SupernodeGcResult> {
    const c = this.config;
    this.#quota ??= await effectiveQuota(c.dataDir, c.diskQuota);
    const r = await collectSupernodeGarbage(
      this.store,
      (taskId) => this.seeder.busy(taskId) || this.scheduler.taskPeers(taskId) > 0,
      (taskId) => {
        this.seeder.forgetTask(taskId);
        this.#leaveSwarm(taskId);
      },
      { quota: this.#quota, high: c.gcHigh / 100, low: c.gcLow / 100, ttlMs: c.taskTtlSeconds * 1000, maxTasks: c.maxTasks, pressure },
      this.log,
      now,
    );
    for (const e of r.evicted) this.metrics.evictions.inc({ why: e.why });
    this.metrics.cacheBytes.set(r.usedBytes);
    this.metrics.cacheTasks.set(r.tasks);
    this.metrics.cacheQuota.set(this.#quota);
    this.metrics.openFiles.set(this.store.openFiles);
    return r;
  }

  #stopped?: Promise<void>;

  /** Safe to call twice. */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    clearInterval(this.#sweeper);
    clearInterval(this.#tuner);
    this.preheat.stop();
    clearInterval(this.#sampler);
    clearInterval(this.#gcTimer);
    await this.#gc.settled();
    this.seeder.stop();
    if (this.#app) {
      for (const client of this.#app.websocketServer?.clients ?? []) client.terminate();
      await this.#app.close();
    }
    await this.store.stop();
    await this.#dispatcher.close();
    await this.#siblings?.close();
    await this.#originFast.client.close();
    this.log.info('supernode:stopped');
  }
}
