#!/usr/bin/env node
// Swarm benchmark: N hosts pull one blob at once over an emulated network, Damselfly against the baselines a user
// would reach for, on the same links in the same run.
//   sudo node bench/swarm.mjs [--nodes 4,8] [--size-mib 200] [--origin-mbit 50] [--node-mbit 50]
//                             [--scenarios damselfly,bittorrent,curl,mirror] [--json out.json]
// Every host is a network namespace on one bridge with its egress capped by `tc tbf` (downlinks uncapped). Host 0 is
// the origin: a real Debian `docker-registry`, and next to it the supernode (Damselfly) or the seeding aria2c and
// opentracker (BitTorrent, 1 MiB pieces). Hosts 1..N each run a dfdaemon and pull through its proxy with curl, or run
// an aria2c leecher, or curl the registry directly, or curl a pull-through registry mirror (docker-registry in proxy
// mode on host N+1, with a node's uplink). Every output is digest-checked. Per scenario it prints p50, max,
// max/T* with T* = max(F/u_origin, N·F/(u_origin + Σu_node)) (downlinks are uncapped), origin bytes / F, the origin
// host's uplink bytes / F, mean upload utilisation of all uplinks until the last host finished, and the CPU the
// daemons used. Needs root, iproute2, docker-registry, curl, aria2c, mktorrent, opentracker (scripts/install.sh
// --test installs them). Namespaces and processes are removed on any exit, also on SIGINT/SIGTERM.
import { randomBytes } from 'node:crypto';
import { createWriteStream, rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { DAEMON_NODE_FLAGS } from '@damselfly/shared';
import { ROOT, cpuSeconds, logLine, sha256File } from './procs.mjs';
import { createNetwork } from './swarm/netns.mjs';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '4,8' },
    'size-mib': { type: 'string', default: '200' },
    'origin-mbit': { type: 'string', default: '50' },
    'node-mbit': { type: 'string', default: '50' },
    scenarios: { type: 'string', default: 'damselfly,bittorrent,curl,mirror' },
    json: { type: 'string' },
    prefix: { type: 'string', default: 'dfsw' },
    subnet: { type: 'string', default: '10.213.77' },
    logs: { type: 'string' },
  },
});
const MiB = 2 ** 20;
const F = Math.round(Number(values['size-mib']) * MiB);
const originMbit = Number(values['origin-mbit']);
const nodeMbit = Number(values['node-mbit']);
const scenarios = values.scenarios.split(',');
for (const s of scenarios) if (!['damselfly', 'bittorrent', 'curl', 'mirror'].includes(s)) throw new Error(`unknown scenario ${s} (damselfly, bittorrent, curl, mirror)`);
const ORIGIN = `${values.subnet}.1`;
const secret = randomBytes(24).toString('base64url');

for (const [what, ok] of [
  ['root (network namespaces)', process.getuid?.() === 0],
  ...['ip', 'tc', 'curl', 'docker-registry', ...(scenarios.includes('bittorrent') ? ['aria2c', 'mktorrent', 'opentracker'] : [])].map((c) => [c, has(c)]),
]) {
  if (!ok) {
    console.error(`bench/swarm needs ${what} (sudo bash scripts/install.sh --test installs the tools)`);
    process.exit(2);
  }
}

function has(cmd) {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const { startRegistry, pushBlobStream, blobChunks } = await import(join(ROOT, '.test-dist/helpers/registry.js'));

const bps = (mbit) => (mbit * 1e6) / 8;
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
/** Where the daemons' logs go: `--logs DIR` keeps them; otherwise they go with the run's scratch directory. */
let logDir;
/**
 * Waits for a child's JSON log line with this msg (the daemons announce "…:started" once listening); everything it
 * logs goes to `<logDir>/<what>.log`.
 */
function started(child, msg, what) {
  const file = createWriteStream(join(logDir, `${what.replace(/\W+/g, '-')}.log`), { flags: 'a' });
  child.stdout.pipe(file);
  child.stderr.pipe(file);
  return logLine(child, msg, `${what} (log: ${file.path})`);
}
function exited(child) {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : once(child, 'exit');
}
/** Runs curl in host i; resolves with when it finished (ms since `t0`) after checking its exit and HTTP status. */
async function curlIn(net, i, args, t0) {
  const c = net.spawn(i, 'curl', ['-sS', '-w', '%{http_code}', ...args]);
  let out = '';
  let err = '';
  c.stdout.on('data', (d) => (out += d));
  c.stderr.on('data', (d) => (err += d));
  // 'close', not 'exit': a quick curl can exit before its output (the status) has been read.
  const [code] = await once(c, 'close');
  const at = performance.now() - t0;
  if (code !== 0 || out.trim() !== '200') throw new Error(`curl on host ${i}: exit ${code}, status ${out.trim()} ${err.trim()}`);
  return at;
}

/** Damselfly: supernode next to the registry, a dfdaemon per node, every node pulling through its proxy at once. */
async function damselfly(net, ctx) {
  const { n, dir, blobUrl } = ctx;
  const env = { ...process.env, DAMSELFLY_CLUSTER_SECRET: secret };
  const sn = net.spawn(0, process.execPath, [
    ...DAEMON_NODE_FLAGS, join(ROOT, 'supernode/dist/cli.js'), '--host', ORIGIN, '--port', '8002', '--data-dir', join(dir, 'sn'),
    '--allowed-origins', `${ORIGIN}:5000`, '--origin-allow-cidrs', `${ORIGIN}/32`, '--log-level', 'info',
  ], { env });
  await started(sn, 'supernode:started', 'supernode');
  const daemons = [];
  for (let i = 1; i <= n; i++) {
    const addr = net.hosts[i].addr;
    const d = net.spawn(i, process.execPath, [
      ...DAEMON_NODE_FLAGS, join(ROOT, 'dfdaemon/dist/cli.js'), '--supernodes', `http://${ORIGIN}:8002`, '--data-dir', join(dir, `df${i}`),
      '--proxy-port', '65001', '--upload-host', addr, '--upload-port', '65002', '--advertise-url', `http://${addr}:65002`,
      '--health-port', '40901', '--peer-id', `node-${i}`, '--registries', `http://${ORIGIN}:5000`, '--log-level', 'info',
    ], { env });
    daemons.push(d);
  }
  await Promise.all(daemons.map((d, i) => started(d, 'dfdaemon:started', `dfdaemon ${i + 1}`)));
  const pids = [sn.pid, ...daemons.map((d) => d.pid)];
  const measured = await race(ctx, pids, (t0) =>
    Promise.all(daemons.map((_, k) => curlIn(net, k + 1, ['-x', 'http://127.0.0.1:65001', '-o', join(dir, `out${k + 1}`), blobUrl], t0))),
  );
  for (const p of [sn, ...daemons]) p.kill('SIGTERM');
  await Promise.all([sn, ...daemons].map(exited));
  const outputs = Array.from({ length: n }, (_, k) => join(dir, `out${k + 1}`));
  return { ...measured, outputs };
}

/** BitTorrent: aria2c seeding next to the registry with opentracker, an aria2c leecher on every node. */
async function bittorrent(net, ctx) {
  const { n, dir, blobFile } = ctx;
  const torrent = join(dir, 'blob.torrent');
  execFileSync('mktorrent', ['-a', `http://${ORIGIN}:6969/announce`, '-l', '20', '-o', torrent, blobFile], { stdio: 'ignore' });
  // Debian's opentracker serves only whitelisted torrents; it chroots to -d before it reads the list (hence relative).
  const infoHash = /^Info Hash: ([0-9a-f]{40})$/m.exec(execFileSync('aria2c', ['-S', torrent]).toString())?.[1];
  if (!infoHash) throw new Error('aria2c -S printed no info hash');
  await writeFile(join(dir, 'whitelist.txt'), `${infoHash}\n`);
  const tracker = net.spawn(0, 'opentracker', ['-i', ORIGIN, '-p', '6969', '-P', '6969', '-u', 'nobody', '-d', dir, '-w', 'whitelist.txt']);
  const common = [
    '--enable-dht=false', '--enable-dht6=false', '--bt-enable-lpd=false', '--disable-ipv6=true', '--seed-ratio=0.0',
    '--listen-port=6881', '--file-allocation=none', '--console-log-level=warn', '--summary-interval=0',
    '--bt-tracker-interval=5', '--bt-max-peers=0',
  ];
  const seeder = net.spawn(0, 'aria2c', [...common, '--dir', join(blobFile, '..'), '--check-integrity=true', '--bt-seed-unverified=false', torrent]);
  // The seeder has hashed its copy and announced itself once the tracker knows a seed: give it that head start
  // (BitTorrent's own set-up, not counted against the swarm).
  await new Promise((r) => setTimeout(r, 3000 + F / 400e6 * 1000));
  const hook = join(dir, 'done.sh');
  await writeFile(hook, '#!/bin/sh\ndate +%s%N > "$3.done"\n');
  await chmod(hook, 0o755);
  const leechers = [];
  const pids = [seeder.pid, tracker.pid];
  const measured = await race(ctx, () => [...pids, ...leechers.map((l) => l.pid)], async (t0, wall0) => {
    for (let i = 1; i <= n; i++) {
      await mkdir(join(dir, `bt${i}`), { recursive: true });
      leechers.push(net.spawn(i, 'aria2c', [...common, '--dir', join(dir, `bt${i}`), `--on-bt-download-complete=${hook}`, torrent]));
    }
    const name = 'blob';
    return Promise.all(
      leechers.map(async (l, k) => {
        const done = join(dir, `bt${k + 1}`, `${name}.done`);
        for (;;) {
          if (l.exitCode !== null) throw new Error(`aria2c on host ${k + 1} exited ${l.exitCode}`);
          try {
            const ns = BigInt((await readFile(done, 'utf8')).trim());
            return Number(ns / 1_000_000n) - wall0;
          } catch {}
          await new Promise((r) => setTimeout(r, 100));
        }
      }),
    );
  });
  for (const p of [tracker, seeder, ...leechers]) p.kill('SIGKILL');
  await Promise.all([tracker, seeder, ...leechers].map(exited));
  return { ...measured, outputs: leechers.map((_, k) => join(dir, `bt${k + 1}`, 'blob')) };
}

/** Direct: every node curls the registry itself. */
async function direct(net, ctx) {
  const { n, dir, blobUrl } = ctx;
  const measured = await race(ctx, [], (t0) =>
    Promise.all(Array.from({ length: n }, (_, k) => curlIn(net, k + 1, ['-o', join(dir, `direct${k + 1}`), blobUrl], t0))),
  );
  return { ...measured, outputs: Array.from({ length: n }, (_, k) => join(dir, `direct${k + 1}`)) };
}

/**
 * A pull-through registry mirror (Debian's docker-registry in proxy mode, as a cluster-local cache would be) on a host
 * of its own with a node's uplink: every node pulls through it; it fetches from the origin what it lacks.
 */
async function mirror(net, ctx) {
  const { n, dir, blobUrl } = ctx;
  const host = net.hosts[n + 1];
  await mkdir(join(dir, 'mirror'), { recursive: true });
  const cache = await startRegistry({ netns: host.ns, host: host.addr, port: 5000, dir: join(dir, 'mirror'), proxy: `http://${ORIGIN}:5000` });
  try {
    const url = blobUrl.replace(`http://${ORIGIN}:5000`, `http://${host.addr}:5000`);
    const measured = await race(ctx, [], (t0) =>
      Promise.all(Array.from({ length: n }, (_, k) => curlIn(net, k + 1, ['-o', join(dir, `mirror${k + 1}`), url], t0))),
    );
    return { ...measured, outputs: Array.from({ length: n }, (_, k) => join(dir, `mirror${k + 1}`)) };
  } finally {
    await cache.stop();
  }
}

/**
 * Times one run of a scenario from a common start: per-host finish times, origin and uplink bytes, CPU of the given
 * processes. A run taking far longer than its bound is stopped with an error rather than left hanging.
 */
async function race(ctx, pids, body) {
  const pidsNow = () => (typeof pids === 'function' ? pids() : pids);
  const tx0 = ctx.net.txBytes();
  const origin0 = ctx.reg.blobBytesServed(ctx.digest);
  const cpu0 = new Map();
  const limitMs = 60_000 + ctx.bound * 1000 * (ctx.n + 4);
  let timer;
  for (const pid of pidsNow()) cpu0.set(pid, cpuSeconds(pid));
  const t0 = performance.now();
  const wall0 = Date.now();
  const times = await Promise.race([
    body(t0, wall0),
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`not done within ${Math.round(limitMs / 1000)} s`)), limitMs))),
  ]).finally(() => clearTimeout(timer));
  // CPU is read while the processes still run (before they are stopped), from the common start on.
  let cpu = 0;
  for (const pid of pidsNow()) cpu += cpuSeconds(pid) - (cpu0.get(pid) ?? 0);
  const tx = ctx.net.txBytes().map((b, i) => b - tx0[i]);
  return { times: times.map((t) => t / 1000), tx, originBytes: ctx.reg.blobBytesServed(ctx.digest) - origin0, cpu };
}

const RUNNERS = { damselfly, bittorrent, curl: direct, mirror };
const NAMES = { damselfly: 'Damselfly', bittorrent: 'BitTorrent (aria2c)', curl: 'direct curl', mirror: 'pull-through mirror' };
const results = [];
const prefix = values.prefix;
for (const n of values.nodes.split(',').map(Number)) {
  // The mirror, when it runs, is one more host with a node's uplink.
  const caps = [originMbit, ...Array(n).fill(nodeMbit), ...(scenarios.includes('mirror') ? [nodeMbit] : [])];
  const net = createNetwork(prefix, caps, values.subnet);
  const dir = await mkdtemp(join(tmpdir(), `damselfly-swarm-${prefix}-`));
  net.onDestroy(() => rmSync(dir, { recursive: true, force: true }));
  logDir = values.logs ? join(values.logs, `n${n}`) : join(dir, 'logs');
  await mkdir(logDir, { recursive: true });
  await chmod(dir, 0o755);
  try {
    await mkdir(join(dir, 'registry'));
    const reg = await startRegistry({ netns: net.hosts[0].ns, host: ORIGIN, port: 5000, dir: join(dir, 'registry') });
    const pushed = await pushBlobStream(reg.url, 'bench/swarm', F, 7);
    const blobFile = join(dir, 'seed', 'blob');
    await mkdir(join(dir, 'seed'), { recursive: true });
    const w = createWriteStream(blobFile);
    for (const c of blobChunks(F, 7)) if (!w.write(c)) await once(w, 'drain');
    w.end();
    await once(w, 'finish');
    const u0 = bps(originMbit);
    const bound = Math.max(F / u0, (n * F) / (u0 + n * bps(nodeMbit)));
    for (const s of scenarios) {
      const ctx = { n, dir: join(dir, s), net, reg, digest: pushed.digest, blobUrl: pushed.url.replace(reg.url, `http://${ORIGIN}:5000`), blobFile, bound };
      await mkdir(ctx.dir, { recursive: true });
      const r = await RUNNERS[s](net, ctx);
      for (const out of r.outputs) {
        const got = await sha256File(out);
        if (got !== pushed.digest) throw new Error(`${s}: ${out} is ${got}, not ${pushed.digest}`);
        if ((await stat(out)).size !== F) throw new Error(`${s}: ${out} has the wrong size`);
      }
      const max = Math.max(...r.times);
      // Utilisation over the hosts the scenario uses (the mirror's host only for the mirror).
      const used = s === 'mirror' ? caps.length : n + 1;
      const capsBps = caps.slice(0, used).map(bps);
      const row = {
        scenario: NAMES[s],
        n,
        sizeMiB: F / MiB,
        bound,
        p50: median(r.times),
        max,
        maxOverBound: max / bound,
        originBytesOverF: (s === 'bittorrent' ? r.tx[0] : r.originBytes) / F,
        originUplinkOverF: r.tx[0] / F,
        uploadUtilisation: r.tx.slice(0, used).reduce((a, b) => a + b, 0) / (capsBps.reduce((a, b) => a + b, 0) * max),
        cpuSeconds: s === 'curl' || s === 'mirror' ? undefined : r.cpu,
        cpuSecondsPerGB: s === 'curl' || s === 'mirror' ? undefined : r.cpu / ((n * F) / 1e9),
      };
      results.push(row);
      console.log(JSON.stringify(row));
      await rm(ctx.dir, { recursive: true, force: true });
    }
    await reg.stop();
  } finally {
    net.destroy();
  }
}

const f = (x, d = 2) => (x === undefined ? '–' : x.toFixed(d));
console.log(`\nF = ${F / MiB} MiB, origin uplink ${originMbit} Mbit/s, node uplinks ${nodeMbit} Mbit/s, downlinks uncapped`);
console.log('| N | scenario | T* s | p50 s | max s | max/T* | origin bytes/F | origin uplink/F | upload utilisation | daemon CPU s (per GB) |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of results) {
  console.log(
    `| ${r.n} | ${r.scenario} | ${f(r.bound, 1)} | ${f(r.p50, 1)} | ${f(r.max, 1)} | ${f(r.maxOverBound)} | ${f(r.originBytesOverF)} | ${f(r.originUplinkOverF)} | ${f(r.uploadUtilisation * 100, 0)} % | ${r.cpuSeconds === undefined ? '–' : `${f(r.cpuSeconds, 1)} (${f(r.cpuSecondsPerGB, 1)})`} |`,
  );
}
if (values.json) await writeFile(values.json, JSON.stringify({ sizeMiB: F / MiB, originMbit, nodeMbit, results }, null, 2));
