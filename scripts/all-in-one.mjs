#!/usr/bin/env node
// All-in-one: a supernode and a dfdaemon in one process, for a single machine or a first try.
// Data lives under $DAMSELFLY_HOME (default ./.damselfly). Extra settings come from the usual env variables.
import { join, resolve } from 'node:path';
import { Supernode, loadSupernodeConfig } from '@damselfly/supernode';
import { Daemon, loadDaemonConfig } from '@damselfly/dfdaemon';

const home = resolve(process.env.DAMSELFLY_HOME ?? '.damselfly');
const env = process.env;
let sn, daemon;
try {
  sn = new Supernode(loadSupernodeConfig({ env, flags: { dataDir: join(home, 'supernode') } }));
  await sn.start();
  daemon = new Daemon(loadDaemonConfig({ env, flags: { dataDir: join(home, 'dfdaemon'), supernodes: env.DFDAEMON_SUPERNODES ?? sn.url } }));
  await daemon.start();
} catch (err) {
  process.stderr.write(`damselfly: ${err?.message ?? err}\n`);
  await sn?.stop().catch(() => {});
  process.exit(1);
}
process.stderr.write(
  `damselfly all-in-one is up\n  supernode      ${sn.url}\n  proxy/mirror   ${daemon.proxyUrl}\n  upload         ${daemon.uploadUrl}\n  health         ${daemon.healthUrl}/server/ping\n` +
    `try: node dfget/dist/cli.js <url> -O <file>\n`,
);
let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    if (stopping) process.exit(1);
    stopping = true;
    await daemon.stop().catch(() => {});
    await sn.stop().catch(() => {});
    process.exit(0);
  });
}
