#!/usr/bin/env node
// Core benchmark: N concurrent downloads of one blob through Damselfly P2P vs the same N straight from
// the registry (curl), in the same run. Prints wall-time and origin-bytes ratios side by side, plus the P2P bound.
//   node bench/core.mjs [--size-mib 256] [--n 4,8] [--origin-mbps 0|200] [--copy]
// --copy: dfget writes a file of its own instead of linking its dfdaemon's verified copy (the bytes then cross
// loopback and are written a second time); the line says which each run did.
// --warm-pages: right before each timed pull (direct and P2P alike), write and delete a file as large as everything the
// pull will write (n outputs; for P2P also the supernode's and each dfdaemon's cache) plus one blob, and at least three
// blobs, so the pages the pull will write into are ones the guest has touched. On a VM whose balloon hands free memory back to the
// host (free page reporting), the first touch of a page costs ~1.4 ms per MiB of writes, and which pull pays it depends
// on the seconds before it; this measures the work itself. Without it, both pay whatever the VM charges.
// --origin-mbps caps the registry's egress (a TCP relay), like a real registry behind a shared uplink; 0 = loopback.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, cpuSeconds, run, sha256File, spawnDaemon, spawnSupernode } from './procs.mjs';

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '256' }, n: { type: 'string', default: '4,8' }, 'origin-mbps': { type: 'string', default: '0' }, copy: { type: 'boolean', default: false }, 'warm-pages': { type: 'boolean', default: false } } });
const { startRegistry, pushBlobStream } = await import(join(ROOT, '.test-dist/helpers/registry.js'));
const { throttledRelay } = await import(join(ROOT, '.test-dist/helpers/throttle.js'));

const size = Number(values['size-mib']) * 2 ** 20;
const ns = values.n.split(',').map(Number);
const mbps = Number(values['origin-mbps']);
const reg = await startRegistry();
// Generated and pushed 1 MiB at a time: the benchmark itself holds no blob, whatever its size.
const { digest } = await pushBlobStream(reg.url, 'bench/blob', size, 42);
let base = reg.url;
let relay;
if (mbps > 0) {
  relay = await throttledRelay({ host: '127.0.0.1', port: Number(new URL(reg.url).port) }, mbps * 1e6);
  base = relay.url;
}
const url = `${base}/v2/bench/blob/blobs/${digest}`;
const out = await mkdtemp(join(tmpdir(), 'bench-out-'));
const served = () => reg.blobBytesServed(digest);

/** See --warm-pages. `blobs`: how many blobs' worth the pull writes. */
async function warmPages(blobs) {
  if (!values['warm-pages']) return;
  const f = join(out, 'warm-pages');
  const r = await run('dd', ['if=/dev/zero', `of=${f}`, 'bs=1M', `count=${Math.max(3, blobs + 1) * Math.ceil(size / 2 ** 20)}`, 'status=none']);
  await rm(f, { force: true });
  if (r.code !== 0) throw new Error(`dd failed: ${r.err}`);
}

async function verify(files) {
  for (const f of files) if ((await sha256File(f)) !== digest) throw new Error(`${f} is corrupt`);
}

async function direct(n) {
  const before = served();
  const files = Array.from({ length: n }, (_, i) => join(out, `direct-${n}-${i}`));
  await warmPages(n);
  const t0 = performance.now();
  const rs = await Promise.all(files.map((f) => run('curl', ['-sSf', '-o', f, url])));
  const secs = (performance.now() - t0) / 1000;
  if (rs.some((r) => r.code !== 0)) throw new Error(`curl failed: ${rs.map((r) => r.err).join(' ')}`);
  await verify(files);
  await Promise.all(files.map((f) => rm(f)));
  return { secs, origin: served() - before };
}

async function p2p(n) {
  const before = served();
  const sn = await spawnSupernode();
  const daemons = await Promise.all(Array.from({ length: n }, (_, i) => spawnDaemon(sn.url, i, ['--registries', base])));
  const files = daemons.map((_, i) => join(out, `p2p-${n}-${i}`));
  // The supernode's cache, each dfdaemon's, and with --copy each output besides.
  await warmPages(1 + n * (values.copy ? 2 : 1));
  // CPU is counted from here: what the processes spent starting up is not a cost per MiB.
  const cpu0 = { supernode: cpuSeconds(sn.child.pid), loop: cpuSeconds(sn.child.pid, true), dfdaemon: daemons.map((d) => cpuSeconds(d.child.pid)) };
  const t0 = performance.now();
  const rs = await Promise.all(daemons.map((d, i) => run(process.execPath, [join(ROOT, 'dfget/dist/cli.js'), url, '-O', files[i], '--daemon', d.proxyUrl, '--no-progress', ...(values.copy ? ['--copy'] : [])])));
  const secs = (performance.now() - t0) / 1000;
  if (rs.some((r) => r.code !== 0)) throw new Error(`dfget failed: ${rs.map((r) => r.err).join(' ')}`);
  await verify(files);
  // Linked: the output is the dfdaemon's cached file under a second name.
  const linked = (await Promise.all(files.map((f) => stat(f)))).every((s) => s.nlink > 1);
  // Peak resident memory of each process over the whole run (the kernel's high-water mark).
  const rss = { supernode: await peakRssMiB(sn.child.pid), dfdaemon: Math.max(...(await Promise.all(daemons.map((d) => peakRssMiB(d.child.pid))))) };
  // CPU (user + system) per MiB of blob: the supernode's for the whole swarm, each dfdaemon's for its own copy.
  const mib = F / 2 ** 20;
  const cpu = {
    supernode: ((cpuSeconds(sn.child.pid) - cpu0.supernode) * 1000) / mib,
    // Of which its event loop: what bounds how many downloaders one supernode feeds on a host with cores to spare.
    supernodeLoop: ((cpuSeconds(sn.child.pid, true) - cpu0.loop) * 1000) / mib,
    dfdaemon: (daemons.map((d, i) => (cpuSeconds(d.child.pid) - cpu0.dfdaemon[i]) * 1000).reduce((a, b) => a + b, 0)) / daemons.length / mib,
  };
  await Promise.all(daemons.map((d) => d.stop()));
  await sn.stop();
  await Promise.all([...files.map((f) => rm(f)), ...daemons.map((d) => rm(d.dir, { recursive: true })), rm(sn.dir, { recursive: true })]);
  return { secs, origin: served() - before, rss, cpu, linked };
}

async function peakRssMiB(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

const F = size;
const rows = [];
for (const n of ns) {
  const d = await direct(n);
  const p = await p2p(n);
  // Lower bound with the origin capped: P2P T >= F/u_s; direct T >= N*F/u_s.
  const bound = mbps > 0 ? F / (mbps * 1e6) : undefined;
  rows.push({ n, d, p, bound });
  console.log(
    `N=${n} ${(F / 2 ** 20).toFixed(0)} MiB${mbps ? ` origin ${mbps} MB/s` : ' loopback'}: direct ${d.secs.toFixed(2)} s, origin ${(d.origin / F).toFixed(2)}x blob | ` +
      `P2P ${p.secs.toFixed(2)} s, origin ${(p.origin / F).toFixed(2)}x blob | time P2P/direct ${(p.secs / d.secs).toFixed(2)}, origin bytes P2P/direct ${(p.origin / d.origin).toFixed(3)}` +
      (bound ? ` | P2P/bound ${(p.secs / bound).toFixed(2)} (bound ${bound.toFixed(2)} s; direct bound ${(n * bound).toFixed(2)} s)` : '') +
      ` | peak RSS supernode ${p.rss.supernode.toFixed(0)} MiB, dfdaemon ${p.rss.dfdaemon.toFixed(0)} MiB` +
      ` | CPU per MiB supernode ${p.cpu.supernode.toFixed(1)} ms (event loop ${p.cpu.supernodeLoop.toFixed(1)}), dfdaemon ${p.cpu.dfdaemon.toFixed(1)} ms` +
      ` | dfget output ${p.linked ? "linked to its dfdaemon's copy" : 'a copy of its own'}` +
      (values['warm-pages'] ? ' | pages warmed before each pull' : ''),
  );
}
console.log(JSON.stringify({ sizeMiB: F / 2 ** 20, originMBps: mbps || 'loopback', warmPages: values['warm-pages'], rows }, null, 0));
await relay?.close();
await reg.stop();
await rm(out, { recursive: true, force: true });
process.exit(0);
