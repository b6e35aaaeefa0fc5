#!/usr/bin/env node
import { Command } from 'commander';
import { describeError, kebab } from '@damselfly/shared';
import { loadSupernodeConfig, supernodeSchema } from './config.js';
import { Supernode } from './supernode.js';

const program = new Command('supernode')
  .description('Damselfly supernode: schedules peers and seeds pieces from the origin')
  .option('-c, --config <file>', 'YAML config file');
for (const [key, spec] of Object.entries(supernodeSchema)) {
  program.option(`--${kebab(key)} <value>`, `${spec.doc}${spec.env ? ` [$${spec.env}]` : ''}`);
}
program.parse();
const { config: file, ...flags } = program.opts<Record<string, string>>();

let node: Supernode;
try {
  node = new Supernode(loadSupernodeConfig({ file, flags, env: process.env }));
  await node.start();
} catch (err) {
  process.stderr.write(`supernode: ${describeError(err)}\n`);
  process.exit(1);
}
let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (stopping) process.exit(1);
    stopping = true;
    node.stop().then(() => process.exit(0), () => process.exit(1));
  });
}
