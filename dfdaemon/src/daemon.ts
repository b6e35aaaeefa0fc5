/** Wires dfdaemon's parts and runs them in order: store, upload server, supernode pool, peer, proxy, health, metrics. */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { Agent, buildConnector, type Dispatcher } from 'undici';
import { advertiseHost, clusterTls, createLogger, GcRunner, isLoopbackHost, createOriginDispatcher, describeError, effectiveQuota, listenAs, listenServer, redactUrl, startOrUndo, BufferPool, BulkClient, TokenBucket, type Logger } from '@damselfly/shared';
import type { DaemonConfig } from './config.js';
import { collectGarbage, type GcResult } from './storage/gc.js';
import { LocalStore, Peer, SupernodePool, engineOptions } from '@damselfly/peer';
import { createDaemonMetrics, type DaemonMetrics } from './metrics.js';
import { buildUploadServer } from './upload/upload-server.js';
import { buildMetricsServer } from './metrics-server.js';
import { buildProxyServer } from './proxy/proxy-server.js';
import { buildHealthServer } from './health-server.js';
import { AccessGuard } from './proxy/access-guard.js';
import { allowedHosts } from './proxy/route.js';

export class Daemon {
  readonly config: Readonly<DaemonConfig>;
  readonly log: Logger;
  readonly metrics: DaemonMetrics;
  readonly store: LocalStore;
  readonly #dispatcher: Dispatcher;
  /** Pass-through requests: redirects go back to the client untouched. */
  readonly #direct: Agent;
  /** Pieces from other cluster members (peers, supernodes): the cluster's TLS material, no redirects. */
  readonly #cluster: BulkClient;
  /** Every byte this node serves (to its clients and to peers) is read into one of these: memory stays flat. */
  readonly #buffers = new BufferPool(1 << 20, 48);
  #pool?: SupernodePool;
  #peer?: Peer;
  #upload?: FastifyInstance;
  #health?: FastifyInstance;
  #metricsServer?: FastifyInstance;
  #proxy?: Server;
  proxyUrl = '';
  uploadUrl = '';
  healthUrl = '';
  /** The network /metrics listener's URL ('' when `metricsHost` is unset). */
  metricsUrl = '';

  constructor(config: Readonly<DaemonConfig>, components: { log?: Logger } = {}) {
    this.config = config;
    this.log = components.log ?? createLogger('dfdaemon', config.logLevel);
    this.metrics = createDaemonMetrics();
    this.store = new LocalStore(config.dataDir);
    this.#cluster = new BulkClient({ keepAliveMs: 10_000, connectTimeoutMs: 10_000, tls: clusterTls(config.trust) });
    // Origins with their own CA (or, loudly, none checked) get their TLS settings on every origin connection: the
    // node's own origin fetches and the requests it passes straight through.
    const originConnect = config.originTls.connector((extra) => buildConnector(extra));
    this.#dispatcher = createOriginDispatcher({ connections: 32, connect: originConnect });
    this.#direct = new Agent({ connections: 64, keepAliveTimeout: 10_000, connectTimeout: 10_000, connect: originConnect });
  }

  get peer(): Peer {
    if (!this.#peer) throw new Error('dfdaemon not started');
    return this.#peer;
  }

  /** Starts every part in order; if one fails (a port in use), the ones already started are stopped again. */
  start(): Promise<void> {
    return startOrUndo(() => this.#start(), () => this.stop());
  }

  /**
   * Fetches blobs an operator preheats on every node into the cache, one after the other, through the normal peer
   * engine (the supernode has seeded them). Only hosts this node's proxy serves are fetched: a push cannot make the
   * node fetch anything its clients could not.
   */
  async #preheat(blobs: { url: string; digest: string }[]): Promise<void> {
    const allowed = allowedHosts({ registries: this.config.registries, proxyHosts: this.config.proxyHosts });
    for (const b of blobs) {
      let url: URL;
      try {
        url = new URL(b.url);
      } catch {
        continue;
      }
      if (!allowed.any && !allowed.hosts.has(url.host)) {
        this.metrics.preheats.inc({ result: 'refused' });
        this.log.warn({ host: url.host }, 'preheat:refused (host not in registries or proxyHosts)');
        continue;
      }
      try {
        const dl = await this.#peer!.download({ url, digest: b.digest, headers: {} });
        await dl.done;
        this.metrics.preheats.inc({ result: 'ok' });
        this.log.info({ url: redactUrl(url.href) }, 'preheat:fetched');
      } catch (err) {
        this.metrics.preheats.inc({ result: 'failed' });
        this.log.warn({ url: redactUrl(url.href), err: describeError(err) }, 'preheat:failed');
      }
    }
  }

  async #start(): Promise<void> {
    const c = this.config;
    if (!c.trust.secret && c.trust.insecure) {
      this.log.warn({ uploadHost: c.uploadHost, proxyHost: c.proxyHost }, 'dfdaemon:INSECURE: no cluster secret, anyone who reaches the upload server can read every cached piece');
    }
    for (const host of c.originTls.insecureHosts) {
      this.log.warn({ host }, 'dfdaemon:INSECURE: TLS certificates of this origin are NOT verified: anyone on the network path can serve its blobs (the digest check still catches wrong bytes of digest-named blobs)');
    }
    await this.store.start();
    // Private blobs are cached there: an operator must learn that other local users may read them.
    for (const dir of this.store.exposed) this.log.warn({ dir }, 'store:exposed');
    const uploadLimit = new TokenBucket(c.uploadRate);
    this.#upload = buildUploadServer({ store: this.store, metrics: this.metrics, log: this.log, slots: c.uploadSlots, trust: c.trust, pool: this.#buffers, limit: uploadLimit });
    const upload = this.#upload;
    await listenAs('uploadPort', c.uploadHost, c.uploadPort, () => upload.listen({ host: c.uploadHost, port: c.uploadPort }));
    const uploadPort = (this.#upload.server.address() as AddressInfo).port;
    const scheme = c.trust.tls?.cert ? 'https' : 'http';
    this.uploadUrl = c.advertiseUrl ?? `${scheme}://${advertiseHost(c.uploadHost)}:${uploadPort}`;

    this.#pool = new SupernodePool(c.supernodes, { peerId: c.peerId, uploadUrl: this.uploadUrl, labels: c.labels, uploadRate: c.uploadRate || undefined }, this.log, c.trust);
    // Whatever leaves the cache leaves the swarm at once: others are not sent here for pieces that are gone.
    const pool = this.#pool;
    // Unless a run of the same task has just registered again (it is being fetched anew, into a new file: a detached
    // task, or one GC took between a registration and its run's open): leaving would undo that registration, so only
    // the pieces go.
    const dropped = (taskId: string, piece: number) => pool.notify(taskId, { type: 'piece:dropped', taskId, piece });
    this.store.on('task:evicted', (taskId, had) => {
      if (!this.#peer?.running(taskId)) return pool.notify(taskId, { type: 'task:leave', taskId });
      for (const piece of had) dropped(taskId, piece);
    });
    this.store.on('piece:dropped', dropped);
    const access = new AccessGuard({ ttlMs: c.accessCacheSeconds * 1000 }, { dispatcher: this.#direct, metrics: this.metrics, log: this.log });
    this.#peer = new Peer(
      engineOptions(c, c.maxBlobSize),
      {
        store: this.store,
        pool: this.#pool,
        dispatcher: this.#dispatcher,
        cluster: this.#cluster,
        metrics: this.metrics,
        log: this.log,
        onDiskFull: () => void this.relieveDiskPressure().catch((err) => this.log.warn({ err: String(err) }, 'gc:failed')),
        // The supernode's first probe of a blob was made with this client's own headers: no second check for it.
        onAccessChecked: (url, headers) => access.remember(url, headers),
      },
    );
    // Connected to every supernode from the start, so an operator's all-peers preheat reaches this node too.
    this.#pool.stayConnected((blobs) => void this.#preheat(blobs));
    const limits = { upload: uploadLimit, download: this.#peer.limits.download, back_to_source: this.#peer.limits.backSource };
    for (const [direction, bucket] of Object.entries(limits)) {
      this.metrics.rateLimit.set({ direction }, bucket.rate);
      this.metrics.limitWaits.set(direction, () => bucket.waitedSeconds);
    }

    this.#proxy = buildProxyServer({
      peer: this.#peer,
      metrics: this.metrics,
      log: this.log,
      policy: { registries: c.registries, proxyHosts: c.proxyHosts, prefetch: c.prefetch },
      direct: this.#direct,
      cached: (taskId) => this.store.current(taskId),
      pool: this.#buffers,
      access,
    });
    const proxy = this.#proxy;
    await listenAs('proxyPort', c.proxyHost, c.proxyPort, () => listenServer(proxy, c.proxyPort, c.proxyHost));
    this.proxyUrl = `http://${advertiseHost(c.proxyHost)}:${(this.#proxy.address() as AddressInfo).port}`;

    this.#gcTimer = setInterval(() => void this.gc().catch((err) => this.log.warn({ err: String(err) }, 'gc:failed')), c.gcIntervalSeconds * 1000);
    this.#gcTimer.unref();
    await this.gc();

    this.#health = buildHealthServer({ metrics: this.metrics, log: this.log });
    const health = this.#health;
    await listenAs('healthPort', c.healthHost, c.healthPort, () => health.listen({ host: c.healthHost, port: c.healthPort }));
    this.healthUrl = `http://${advertiseHost(c.healthHost)}:${(this.#health.server.address() as AddressInfo).port}`;
    if (c.metricsHost) {
      if (!c.trust.secret && !isLoopbackHost(c.metricsHost)) this.log.warn({ metricsHost: c.metricsHost }, 'dfdaemon:INSECURE: /metrics on the network without a cluster secret, anyone who reaches it reads them');
      this.#metricsServer = buildMetricsServer({ metrics: this.metrics, log: this.log, trust: c.trust });
      const metricsServer = this.#metricsServer;
      await listenAs('metricsPort', c.metricsHost, c.metricsPort, () => metricsServer.listen({ host: c.metricsHost, port: c.metricsPort }));
      this.metricsUrl = `${c.trust.tls?.cert ? 'https' : 'http'}://${advertiseHost(c.metricsHost)}:${(metricsServer.server.address() as AddressInfo).port}`;
    }
    this.log.info({ proxy: this.proxyUrl, upload: this.uploadUrl, health: this.healthUrl, supernodes: c.supernodes, peerId: c.peerId }, 'dfdaemon:started');
  }

  #stopped?: Promise<void>;
  #gcTimer?: NodeJS.Timeout;
  readonly #gc = new GcRunner<GcResult>((now, pressure) => this.#gcPass(now, pressure));
  /** diskQuota, or half the filesystem when it is 0 (resolved at the first GC pass). */
  #quota?: number;

  /** One GC pass (quota watermarks, TTL), or the one under way; also refreshes the cache metrics. */
  gc(now = Date.now()): Promise<GcResult> {
    return this.#gc.run(now);
  }

  /** A write found the disk full: shrink the cache to make room now (see GcRunner). */
  relieveDiskPressure(): Promise<GcResult> {
    this.metrics.diskFull.inc();
    return this.#gc.relieve();
  }

  async #gcPass(now: number, pressure: boolean): Promise<GcResult> {
    const c = this.config;
    this.#quota ??= await effectiveQuota(c.dataDir, c.diskQuota);
    const r = await collectGarbage(this.store, { quota: this.#quota, high: c.gcHigh / 100, low: c.gcLow / 100, ttlMs: c.taskTtlSeconds * 1000, maxTasks: c.maxTasks, pressure }, this.log, now);
    for (const e of r.evicted) this.metrics.evictions.inc({ why: e.why });
    this.metrics.cacheBytes.set(r.usedBytes);
    this.metrics.cacheQuota.set(this.#quota);
    this.metrics.cacheTasks.set([...this.store.tasks()].length);
    return r;
  }

  /** Stops taking requests, ends downloads, leaves the supernodes, closes the store. Safe to call twice. */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    clearInterval(this.#gcTimer);
    if (this.#proxy) {
      this.#proxy.close();
      this.#proxy.closeAllConnections();
    }
    await this.#peer?.stop();
    this.#pool?.close();
    await this.#upload?.close();
    await this.#metricsServer?.close();
    await this.#health?.close();
    await this.store.stop();
    await this.#dispatcher.close();
    await this.#direct.close();
    await this.#cluster.close();
    this.log.info('dfdaemon:stopped');
  }
}
