#!/usr/bin/env -S node --max-semi-space-size=2
import { runCli } from '@damselfly/shared';
import { daemonSchema, loadDaemonConfig } from './config.js';
import { Daemon } from './daemon.js';

await runCli({
  name: 'dfdaemon',
  description: 'Damselfly peer daemon: registry mirror / proxy, piece cache and upload server',
  schema: daemonSchema,
  load: loadDaemonConfig,
  create: (config) => new Daemon(config),
  graceMs: (config) => config.shutdownGraceSeconds * 1000,
});
