#!/usr/bin/env node
// Range benchmark: time to first byte of a 1 MiB Range read of an uncached blob through dfdaemon
// (forward proxy, as nydusd reads) versus straight from the registry, and what the origin served for it.
//   node bench/range.mjs [--size-mib 1024] [--reads 5] [--latency-ms 10]
// --latency-ms puts a relay adding that much each way in front of the registry (direct reads go through it too).
// RANGE_GAP_MS=<ms> waits between reads (each read also leaves the rest of its piece to arrive in the background).
// The direct baseline is read right before each uncached read, after the same wait.
// Each range is read by a first node (uncached), a second node right after it (while the rest of the covering piece
// is still arriving at the first), and a third node once that has settled (RANGE_SETTLE_MS, default 500 ms).
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { existsSync, rmSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { ROOT, spawnDaemon, spawnSupernode } from './procs.mjs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const { values } = parseArgs({
  options: { 'size-mib': { type: 'string', default: '1024' }, reads: { type: 'string', default: '5' }, 'latency-ms': { type: 'string', default: '0' } },
});
const { startRegistry, pushBlob, makeBlob } = await import(join(ROOT, '.test-dist/helpers/registry.js'));
const size = Number(values['size-mib']) * 2 ** 20;
const reads = Number(values.reads);
const MiB = 2 ** 20;
const reg = await startRegistry();
const latency = Number(values['latency-ms']);
const { latencyRelay } = await import(join(ROOT, '.test-dist/helpers/latency.js'));
const relay = latency > 0 ? await latencyRelay({ host: '127.0.0.1', port: Number(new URL(reg.url).port) }, latency) : undefined;
const blob = makeBlob(size, 5);
const pushed = await pushBlob(reg.url, 'bench/range', blob);
const digest = pushed.digest;
const base = relay?.url ?? reg.url;
const url = pushed.url.replace(reg.url, base);
const served = () => reg.blobBytesServed(digest);

/** Where each read's body goes, to be compared with the blob (tmpfs when there is one: no disk write in the timing). */
const out = join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), `range-bench-${process.pid}`);
process.on('exit', () => rmSync(out, { force: true }));
let checked = 0;
/** curl's own timers: TTFB and total, in ms; the body must be `expected`, byte for byte. */
async function curl(args, expected) {
  const { stdout } = await promisify(execFile)('curl', ['-sS', '-o', out, '-w', '%{http_code} %{time_starttransfer} %{time_total}', ...args]);
  const [code, ttfb, total] = stdout.trim().split(' ');
  if (code !== '206') throw new Error(`status ${code}`);
  if (!(await readFile(out)).equals(expected)) throw new Error(`curl ${args.join(' ')}: the body is not the blob's bytes`);
  checked++;
  return { ttfb: Number(ttfb) * 1000, total: Number(total) * 1000 };
}

// Spread over the blob, one per piece-sized stripe, so no two reads share a piece.
const offsets = Array.from({ length: reads }, (_, i) => Math.floor(((i + 0.5) / reads) * (size - MiB)));
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
// A first pass of direct reads says what a direct read costs the origin; the baseline for the ratios is taken again
// below, interleaved with the P2P reads, so both see the machine in the same state (right after the push, writeback
// of the pushed blob made some direct reads 5x slower than others).
let before = served();
const slice = (off) => blob.subarray(off, off + MiB);
for (const off of offsets) await curl(['-r', `${off}-${off + MiB - 1}`, url], slice(off));
const directOrigin = served() - before;
const direct = [];

// Long-running supernode and dfdaemons, as in production, warmed up on another blob; every measured read then hits a
// piece nobody has (offsets are in distinct pieces), so each one is seeded from the origin on demand.
const warmBlob = makeBlob(8 * MiB, 6);
const warmPushed = await pushBlob(reg.url, 'bench/warm', warmBlob);
const warmUp = { url: warmPushed.url.replace(reg.url, base) };
const sn = await spawnSupernode();
const a = await spawnDaemon(sn.url, 0, ['--registries', base]);
const b = await spawnDaemon(sn.url, 1, ['--registries', base]);
const c = await spawnDaemon(sn.url, 2, ['--registries', base]);
for (const d of [a, b, c]) await curl(['-x', d.proxyUrl, '-r', '0-99', warmUp.url], warmBlob.subarray(0, 100));
const settle = Number(process.env.RANGE_SETTLE_MS ?? 500);
const cold = [];
const warm = [];
const settled = [];
before = served();
for (const off of offsets) {
  await new Promise((r) => setTimeout(r, Number(process.env.RANGE_GAP_MS ?? 0)));
  // The registry's own page cache already holds this range (the push wrote it): a direct read now is what it costs
  // just before the P2P one, in the same conditions.
  direct.push(await curl(['-r', `${off}-${off + MiB - 1}`, url], slice(off)));
  cold.push(await curl(['-x', a.proxyUrl, '-r', `${off}-${off + MiB - 1}`, url], slice(off)));
  // A second node reading the same range: the piece is in the swarm now.
  warm.push(await curl(['-x', b.proxyUrl, '-r', `${off}-${off + MiB - 1}`, url], slice(off)));
  // A third node once the swarm is quiet: the same hops, without the first node's piece still streaming beside it.
  await new Promise((r) => setTimeout(r, settle));
  settled.push(await curl(['-x', c.proxyUrl, '-r', `${off}-${off + MiB - 1}`, url], slice(off)));
}
// The interleaved direct reads cost the origin what the first pass measured; the task's registration, the blob's
// first block (its size probe brings it), is counted apart: it is once per blob, not per read.
const { BLOCK_SIZE, pieceSizeFor } = await import('@damselfly/shared');
const firstBlock = Math.min(BLOCK_SIZE, size);
const p2pOrigin = served() - before - directOrigin - firstBlock;
// RANGE_ALL=1: every read's TTFB, in order (each node's first read of the blob first).
if (process.env.RANGE_ALL) {
  for (const [name, xs] of Object.entries({ uncached: cold, 'second node': warm, 'third node': settled, direct })) console.log(`  ${name}: ${xs.map((r) => r.ttfb.toFixed(1)).join(' ')}`);
}
await Promise.all([a.stop(), b.stop(), c.stop()]);
await sn.stop();
await Promise.all([a, b, c, sn].map((p) => rm(p.dir, { recursive: true })));
const fmt = (x) => x.toFixed(1);
console.log(`${values['size-mib']} MiB blob, ${reads} reads of 1 MiB at spread offsets (median)${latency ? `, registry ${latency} ms away each way` : ', loopback'}:`);
console.log(`  direct from registry      TTFB ${fmt(median(direct.map((r) => r.ttfb)))} ms, total ${fmt(median(direct.map((r) => r.total)))} ms; origin ${(directOrigin / reads / MiB).toFixed(2)} MiB per read`);
console.log(`  first read of the blob    TTFB ${fmt(cold[0].ttfb)} ms (registers the task: size probe + first piece)`);
// Each node's first read of the blob also registers the task there: shown apart, like the first node's.
console.log(`  the same at the 2nd / 3rd node: TTFB ${fmt(warm[0].ttfb)} / ${fmt(settled[0].ttfb)} ms (the task is registered at the supernode already)`);
for (const xs of [cold, warm, settled]) xs.shift();
console.log(`  dfdaemon, uncached piece  TTFB ${fmt(median(cold.map((r) => r.ttfb)))} ms, total ${fmt(median(cold.map((r) => r.total)))} ms (ratio ${(median(cold.map((r) => r.ttfb)) / median(direct.map((r) => r.ttfb))).toFixed(2)})`);
const line = (name, xs) => console.log(`  ${name.padEnd(24)} TTFB ${fmt(median(xs.map((r) => r.ttfb)))} ms, total ${fmt(median(xs.map((r) => r.total)))} ms (ratio ${(median(xs.map((r) => r.ttfb)) / median(direct.map((r) => r.ttfb))).toFixed(2)})`);
line('dfdaemon, 2nd node', warm);
line(`3rd node, ${settle} ms later`, settled);
console.log(`  origin bytes per read via P2P (3 nodes read it): ${(p2pOrigin / reads / MiB).toFixed(2)} MiB = the ${pieceSizeFor(size) / MiB} MiB piece(s) covering it, once; not ${values['size-mib']} MiB, not once per node`);
console.log(`  and once for the blob: its first ${firstBlock / 1024} KiB, which came with its size`);
console.log(`  every read's body (${checked} of them) was the blob's bytes for its range`);
await relay?.close();
await reg.stop();
process.exit(0);
