/** Wires the supernode's parts together and runs them (`start()`/`stop()`). */
import { createLogger, createOriginDispatcher, type Logger } from '@damselfly/shared';
import type { FastifyInstance } from 'fastify';
import type { AddressInfo } from 'node:net';
import type { SupernodeConfig } from './config.js';
import { TaskStore } from './resource/task-store.js';
import { Seeder } from './seed/seeder.js';
import { Scheduler } from './scheduling/scheduler.js';
import type { SchedulePolicy } from './scheduling/policy.js';
import { createSupernodeMetrics, type SupernodeMetrics } from './metrics.js';
import { buildServer } from './api/server.js';

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
  readonly #dispatcher = createOriginDispatcher();
  #app?: FastifyInstance;
  #sweeper?: NodeJS.Timeout;
  #url = '';

  constructor(config: Readonly<SupernodeConfig>, components: SupernodeComponents = {}) {
    this.config = config;
    this.log = components.log ?? createLogger('supernode', config.logLevel);
    this.metrics = createSupernodeMetrics();
    this.store = new TaskStore(config.dataDir);
    this.scheduler = new Scheduler({
      supernodeSlots: config.uploadSlots,
      peerSlots: config.peerUploadSlots,
      failuresBeforeBlacklist: config.failuresBeforeBlacklist,
      policy: components.policy,
    });
    this.seeder = new Seeder({ originConcurrency: config.originConcurrency }, {
      store: this.store,
      dispatcher: this.#dispatcher,
      log: this.log,
      originBytes: this.metrics.originBytes,
    });
    this.scheduler.on('peer:blacklisted', ({ taskId, peerId, reason }) => {
      this.metrics.blacklisted.inc({ reason: reason.includes('corrupt') ? 'corrupt' : 'failures' });
      this.log.warn({ taskId, peerId, reason }, 'peer:blacklisted');
    });
  }

  /** Base URL of this supernode (after `start()`). */
  get url(): string {
    return this.#url;
  }

  async start(): Promise<void> {
    await this.store.start();
    this.#app = buildServer({
      scheduler: this.scheduler,
      seeder: this.seeder,
      store: this.store,
      metrics: this.metrics,
      log: this.log,
      selfUrl: () => this.#url,
      peerUrls: new Map(),
    });
    await this.#app.listen({ host: this.config.host, port: this.config.port });
    const addr = this.#app.server.address() as AddressInfo;
    const host = this.config.host === '0.0.0.0' || this.config.host === '::' ? '127.0.0.1' : this.config.host;
    this.#url = this.config.advertiseUrl ?? `http://${host.includes(':') ? `[${host}]` : host}:${addr.port}`;
    this.#sweeper = setInterval(() => this.scheduler.sweep(), 5_000).unref();
    this.log.info({ url: this.#url, dataDir: this.config.dataDir }, 'supernode:started');
  }

  #stopped?: Promise<void>;

  /** Safe to call twice. */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    clearInterval(this.#sweeper);
    this.seeder.stop();
    if (this.#app) {
      for (const client of this.#app.websocketServer?.clients ?? []) client.terminate();
      await this.#app.close();
    }
    await this.store.stop();
    await this.#dispatcher.close();
    this.log.info('supernode:stopped');
  }
}
