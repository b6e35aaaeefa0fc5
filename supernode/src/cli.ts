#!/usr/bin/env -S node --max-semi-space-size=2
import { runCli } from '@damselfly/shared';
import { loadSupernodeConfig, supernodeSchema } from './config.js';
import { Supernode } from './supernode.js';

await runCli({
  name: 'supernode',
  description: 'Damselfly supernode: schedules peers and seeds pieces from the origin',
  schema: supernodeSchema,
  load: loadSupernodeConfig,
  create: (config) => new Supernode(config),
  graceMs: (config) => config.shutdownGraceSeconds * 1000,
});
