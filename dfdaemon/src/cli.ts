#!/usr/bin/env node
import { Command } from 'commander';
import { describeError, kebab } from '@damselfly/shared';
import { daemonSchema, loadDaemonConfig } from './config.js';
import { Daemon } from './daemon.js';

const program = new Command('dfdaemon')
  .description('Damselfly peer daemon: registry mirror / proxy, piece cache and upload server')
  .option('-c, --config <file>', 'YAML config file');
for (const [key, spec] of Object.entries(daemonSchema)) {
  program.option(`--${kebab(key)} <value>`, `${spec.doc}${spec.env ? ` [$${spec.env}]` : ''}`);
}
program.parse();
const { config: file, ...flags } = program.opts<Record<string, string>>();

let daemon: Daemon;
try {
  daemon = new Daemon(loadDaemonConfig({ file, flags, env: process.env }));
  await daemon.start();
} catch (err) {
  process.stderr.write(`dfdaemon: ${describeError(err)}\n`);
  process.exit(1);
}
let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (stopping) process.exit(1);
    stopping = true;
    daemon.stop().then(() => process.exit(0), () => process.exit(1));
  });
}
