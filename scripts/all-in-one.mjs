#!/usr/bin/env node
// All-in-one: a supernode and a dfdaemon in one process, for a single machine or a first try.
// Data lives under $DAMSELFLY_HOME (default ./.damselfly). Extra settings come from the usual env variables.
//
// Secure by default: without a cluster secret (--cluster-secret-file or DAMSELFLY_CLUSTER_SECRET(_FILE)) a random
// secret is created once in
// $DAMSELFLY_HOME/cluster-secret (mode 0600); other nodes join by being given the same file. The supernode seeds only
// from the dfdaemon's registries and proxy hosts, flags or environment (--allowed-origins or SUPERNODE_ALLOWED_ORIGINS
// to change that), and from their own
// addresses even when those are loopback or private: the operator named them.
import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Supernode, loadSupernodeConfig, supernodeSchema } from '@damselfly/supernode';
import { Daemon, daemonSchema, loadDaemonConfig } from '@damselfly/dfdaemon';
import { kebab, optionHelp } from '@damselfly/shared';

// Flags: every supernode and dfdaemon setting (`bash scripts/run.sh --port 9002 --proxy-port 65011`); one that both
// have (--log-level, --cluster-secret-file, ...) applies to both. Data lives under DAMSELFLY_HOME instead of --data-dir.
const keys = new Map();
for (const [key, spec] of [...Object.entries(supernodeSchema), ...Object.entries(daemonSchema)]) {
  if (key !== 'dataDir' && !spec.noFlag) keys.set(kebab(key), { key, spec });
}
let parsed;
try {
  parsed = parseArgs({ options: { help: { type: 'boolean', short: 'h' }, ...Object.fromEntries([...keys.keys()].map((k) => [k, { type: 'string' }])) }, strict: true });
} catch (err) {
  process.stderr.write(`damselfly: ${err.message.split('.')[0]} (see --help)\n`);
  process.exit(2);
}
if (parsed.values.help) {
  process.stdout.write('bash scripts/run.sh [--setting value]...   (data under $DAMSELFLY_HOME, default ./.damselfly)\n\n');
  for (const [flag, { spec }] of keys) process.stdout.write(`  --${flag.padEnd(30)} ${optionHelp(spec)}\n`);
  process.exit(0);
}
const snFlags = {};
const dfFlags = {};
for (const [flag, value] of Object.entries(parsed.values)) {
  const { key } = keys.get(flag);
  // --advertise-url is the upload server's: peers fetch the supernode's pieces where they reached it, so its own
  // advertiseUrl is only a name, and the same URL for both would send peers to the supernode for the node's pieces.
  if (key in supernodeSchema && key !== 'advertiseUrl') snFlags[key] = value;
  if (key in daemonSchema) dfFlags[key] = value;
}

const home = resolve(process.env.DAMSELFLY_HOME ?? '.damselfly');
const env = { ...process.env };
// A secret given as a flag counts too: creating one beside it would only leave an unused file behind.
const secretFlag = parsed.values['cluster-secret-file'];
// A flag wins over the environment, as for every other setting (both would be refused as two secrets).
if (secretFlag) {
  delete env.DAMSELFLY_CLUSTER_SECRET;
  delete env.DAMSELFLY_CLUSTER_SECRET_FILE;
}
if (!secretFlag && !env.DAMSELFLY_CLUSTER_SECRET && !env.DAMSELFLY_CLUSTER_SECRET_FILE) {
  const file = join(home, 'cluster-secret');
  if (!existsSync(file)) {
    mkdirSync(home, { recursive: true });
    writeFileSync(file, randomBytes(32).toString('base64url') + '\n', { mode: 0o600 });
  }
  env.DAMSELFLY_CLUSTER_SECRET_FILE = file;
}
const split = (s) => (s ?? '').split(',').map((x) => x.trim()).filter(Boolean);
// What the dfdaemon serves, as it will read it: its flags win over the environment.
const registries = split(dfFlags.registries ?? env.DFDAEMON_REGISTRIES);
const origins = [...registries, ...split(dfFlags.proxyHosts ?? env.DFDAEMON_PROXY_HOSTS)];
env.SUPERNODE_ALLOWED_ORIGINS ??= origins.join(',');
if (env.SUPERNODE_ORIGIN_ALLOW_CIDRS === undefined) {
  const cidrs = new Set();
  for (const r of registries) {
    try {
      for (const a of await lookup(new URL(r).hostname, { all: true })) cidrs.add(a.family === 4 ? `${a.address}/32` : `${a.address}/128`);
    } catch {}
  }
  env.SUPERNODE_ORIGIN_ALLOW_CIDRS = [...cidrs].join(',');
}

let sn, daemon;
try {
  sn = new Supernode(loadSupernodeConfig({ env, flags: { ...snFlags, dataDir: join(home, 'supernode') } }));
  await sn.start();
  // The dfdaemon beside it connects over loopback: an interface address can change under a running laptop.
  daemon = new Daemon(loadDaemonConfig({ env, flags: { supernodes: env.DFDAEMON_SUPERNODES ?? sn.localUrl, ...dfFlags, dataDir: join(home, 'dfdaemon') } }));
  await daemon.start();
} catch (err) {
  process.stderr.write(`damselfly: ${err?.code ? `${err.code}: ` : ''}${err?.message ?? err}\n`);
  await sn?.stop().catch(() => {});
  process.exit(1);
}
process.stderr.write(
  `damselfly all-in-one is up\n  supernode      ${sn.url}\n  proxy/mirror   ${daemon.proxyUrl}\n  upload         ${daemon.uploadUrl}\n  health         ${daemon.healthUrl}/server/ping\n` +
    `  cluster secret ${secretFlag ?? env.DAMSELFLY_CLUSTER_SECRET_FILE ?? '(from DAMSELFLY_CLUSTER_SECRET)'}\n` +
    `  seeds from     ${snFlags.allowedOrigins ?? (env.SUPERNODE_ALLOWED_ORIGINS || '(nothing: set DFDAEMON_REGISTRIES or --registries)')}\n` +
    `try: node dfget/dist/cli.js <url> -O <file> --daemon ${daemon.proxyUrl}\n`,
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
