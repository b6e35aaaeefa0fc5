#!/usr/bin/env node
// Serving benchmark: how fast a blob leaves a node once the swarm has it, against curl straight from the
// registry in the same run:
//   - warm: a blob cached on the node, pulled again through its mirror (what every later pull on that node is);
//   - the same once dfget has linked the node's copy as its output (every block then hashed as it is read);
//   - second node: a fresh dfdaemon pulling a blob the first node and the supernode hold (the swarm's common case),
//     beside curl writing the blob from the registry to a new file (a node must cache what it gets, and writing a new
//     file is itself the slow part on some machines), timed just before each second node.
//   node bench/serve.mjs [--size-mib 1024] [--runs 3]
// Timed pulls go to /dev/null (a consumer that hashes or writes would be the bottleneck on this machine); each path's
// bytes are digest-checked by one more, untimed pull, and a second node's cache by serving it back.
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, cpuSeconds, run, spawnDaemon, spawnSupernode } from './procs.mjs';

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '1024' }, runs: { type: 'string', default: '3' } } });
const { startRegistry, pushBlobStream } = await import(join(ROOT, '.test-dist/helpers/registry.js'));
const size = Number(values['size-mib']) * 2 ** 20;
const runs = Number(values.runs);
if (!(size > 0) || !Number.isInteger(runs) || runs < 1) throw new Error('--size-mib and --runs must be positive');

const reg = await startRegistry();
const { digest } = await pushBlobStream(reg.url, 'bench/serve', size, 7);
const url = `${reg.url}/v2/bench/serve/blobs/${digest}`;
const served = () => reg.blobBytesServed(digest);

/** One curl: its own transfer timer (from request to last byte) and byte count; the body goes to `file`. */
function timed(args, file = '/dev/null') {
  return new Promise((resolve, reject) => {
    const c = spawn('curl', ['-sSf', '-o', file, '-w', '%{size_download} %{time_total}', ...args]);
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    c.on('close', (code) => {
      const [bytes, secs] = out.trim().split(' ').map(Number);
      if (code !== 0 || bytes !== size) return reject(new Error(`curl ${args.join(' ')}: exit ${code}, ${bytes} bytes: ${err}`));
      resolve(bytes / secs / 1e6);
    });
  });
}

/** One more pull of the same path, hashed as it streams: a wrong or short body fails the benchmark. */
function verified(args) {
  return new Promise((resolve, reject) => {
    const c = spawn('curl', ['-sSf', ...args]);
    const h = createHash('sha256');
    let err = '';
    c.stdout.on('data', (d) => h.update(d));
    c.stderr.on('data', (d) => (err += d));
    c.on('close', (code) => {
      const got = `sha256:${h.digest('hex')}`;
      if (code !== 0 || got !== digest) return reject(new Error(`curl ${args.join(' ')}: exit ${code}, ${got} is not ${digest}: ${err}`));
      resolve();
    });
  });
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const direct = [];
for (let i = 0; i < runs; i++) direct.push(await timed([url]));
await verified([url]);

const sn = await spawnSupernode();
const first = await spawnDaemon(sn.url, 0, ['--registries', reg.url]);
const before = served();
// Cold, once: the node and the supernode now hold the blob.
await verified(['-x', first.proxyUrl, url]);
const warm = [];
for (let i = 0; i < runs; i++) warm.push(await timed(['-x', first.proxyUrl, url]));
await verified(['-x', first.proxyUrl, url]);

const second = [];
const toFile = [];
/** Origin bytes of the baseline's own pulls, kept out of what the swarm cost the origin. */
let baseline = 0;
const scratch = await mkdtemp(join(tmpdir(), 'bench-serve-'));
const others = [];
// CPU seconds per GB of the timed second-node pulls, per process: where a second node's time goes on this machine.
const cpu = { newNode: 0, firstNode: 0, supernode: 0 };
for (let i = 0; i < runs; i++) {
  // The same blob written to a new file on the same disk, straight from the registry: what caching it costs here.
  const s0 = served();
  toFile.push(await timed([url], join(scratch, 'blob')));
  baseline += served() - s0;
  await rm(join(scratch, 'blob'));
  const d = await spawnDaemon(sn.url, i + 1, ['--registries', reg.url]);
  others.push(d);
  const c0 = [cpuSeconds(d.child.pid), cpuSeconds(first.child.pid), cpuSeconds(sn.child.pid)];
  second.push(await timed(['-x', d.proxyUrl, url]));
  cpu.newNode += cpuSeconds(d.child.pid) - c0[0];
  cpu.firstNode += cpuSeconds(first.child.pid) - c0[1];
  cpu.supernode += cpuSeconds(sn.child.pid) - c0[2];
  // What the new node received is what it cached: served back from its cache, it must be the blob.
  await verified(['-x', d.proxyUrl, url]);
}
const originP2P = served() - before - baseline;

// Last (a handed-out file's uploads to peers are checked block by block too): dfget via the first node links its
// cached copy as its output, and from then on every answer from that file hashes each block as it reads it.
const linkedOut = join(scratch, 'linked');
const got = await run(process.execPath, [join(ROOT, 'dfget/dist/cli.js'), url, '-O', linkedOut, '--daemon', first.proxyUrl, '--no-progress']);
if (got.code !== 0) throw new Error(`dfget failed: ${got.err}`);
if ((await stat(linkedOut)).nlink !== 2) throw new Error('dfget did not link its output to the node\'s copy');
const linked = [];
for (let i = 0; i < runs; i++) linked.push(await timed(['-x', first.proxyUrl, url]));
await verified(['-x', first.proxyUrl, url]);

await Promise.all([first, ...others].map((d) => d.stop()));
await sn.stop();
await Promise.all([first, ...others, sn].map((p) => rm(p.dir, { recursive: true, force: true })));
await rm(scratch, { recursive: true, force: true });
await reg.stop();

const fmt = (x) => `${x.toFixed(0)} MB/s`;
const d = median(direct);
console.log(`${values['size-mib']} MiB blob, median of ${runs} pull(s) to /dev/null, every path digest-checked:`);
console.log(`  direct from registry (curl)          ${fmt(d)}`);
console.log(`  warm: cached on the node (mirror)    ${fmt(median(warm))} (ratio ${(median(warm) / d).toFixed(2)})`);
console.log(`  warm, once dfget linked it (checked) ${fmt(median(linked))} (ratio ${(median(linked) / d).toFixed(2)}; every block hashed as it is read)`);
console.log(`  registry to a new file (curl -o)     ${fmt(median(toFile))} (ratio ${(median(toFile) / d).toFixed(2)})`);
console.log(`  second node (first node + supernode) ${fmt(median(second))} (ratio ${(median(second) / d).toFixed(2)}; ${(median(second) / median(toFile)).toFixed(2)} of writing it to a file)`);
const perGB = (s) => (s / runs / (size / 1e9)).toFixed(2);
console.log(`    CPU per GB moved to a second node: that node ${perGB(cpu.newNode)} s, first node ${perGB(cpu.firstNode)} s, supernode ${perGB(cpu.supernode)} s`);
console.log(`  origin bytes for the cold pull and ${runs} second node(s): ${(originP2P / size).toFixed(2)}x the blob`);
console.log(JSON.stringify({ sizeMiB: Number(values['size-mib']), runs, direct, warm, linked, toFile, second, cpu, originOverBlob: originP2P / size }));
process.exit(0);
