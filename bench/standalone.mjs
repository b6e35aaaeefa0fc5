#!/usr/bin/env node
// dfget as a one-shot peer (a node with no dfdaemon) against `curl -o` from the same registry, runs interleaved: wall
// time, and dfget's CPU and peak RSS, every output digest-checked. By default dfget goes to the origin itself (no
// supernode given); --supernode starts a fresh supernode for each run and dfget fetches its pieces from it (cold).
//   node bench/standalone.mjs [--size-mib 1024] [--runs 3] [--supernode]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT, run, sha256File, spawnSupernode } from './procs.mjs';

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '1024' }, runs: { type: 'string', default: '3' }, supernode: { type: 'boolean', default: false } } });
const { startRegistry, pushBlobStream } = await import(join(ROOT, '.test-dist/helpers/registry.js'));

const size = Number(values['size-mib']) * 2 ** 20;
const reg = await startRegistry();
const { digest } = await pushBlobStream(reg.url, 'bench/standalone', size, 43);
const url = `${reg.url}/v2/bench/standalone/blobs/${digest}`;
const out = await mkdtemp(join(tmpdir(), 'bench-standalone-'));
const served = () => reg.blobBytesServed(digest);

async function checked(file, what) {
  if ((await sha256File(file)) !== digest) throw new Error(`${what}: ${file} is not the blob`);
  await rm(file);
}

const rows = [];
for (let i = 0; i < Number(values.runs); i++) {
  // The baseline first, into a new file as dfget writes one.
  let t0 = performance.now();
  const c = await run('curl', ['-sSf', '-o', join(out, 'curl'), url]);
  const curl = (performance.now() - t0) / 1000;
  if (c.code !== 0) throw new Error(`curl failed: ${c.err}`);
  await checked(join(out, 'curl'), 'curl');

  const sn = values.supernode ? await spawnSupernode() : undefined;
  const before = served();
  t0 = performance.now();
  // GNU time's last stderr line: user s, system s, peak RSS KiB (dfget prints its own line before it).
  const d = await run('/usr/bin/time', ['-f', '%U %S %M', process.execPath, join(ROOT, 'dfget/dist/cli.js'), url, '-O', join(out, 'dfget'), '--standalone', '--no-progress', ...(sn ? ['--supernode', sn.url] : [])]);
  const dfget = (performance.now() - t0) / 1000;
  if (d.code !== 0) throw new Error(`dfget failed: ${d.err}`);
  await checked(join(out, 'dfget'), 'dfget');
  const [user, sys, rssKiB] = d.err.trim().split('\n').pop().split(' ').map(Number);
  const origin = (served() - before) / size;
  await sn?.stop();
  if (sn) await rm(sn.dir, { recursive: true, force: true });
  const row = { curl, dfget, ratio: dfget / curl, cpuMsPerMiB: ((user + sys) * 1000) / (size / 2 ** 20), rssMiB: rssKiB / 1024, origin };
  rows.push(row);
  console.log(
    `run ${i + 1}: ${(size / 2 ** 20).toFixed(0)} MiB ${sn ? 'via a fresh supernode' : 'from the origin'}: curl -o ${curl.toFixed(2)} s | dfget --standalone ${dfget.toFixed(2)} s ` +
      `(ratio ${row.ratio.toFixed(2)}) | dfget CPU ${row.cpuMsPerMiB.toFixed(1)} ms per MiB, peak RSS ${row.rssMiB.toFixed(0)} MiB | origin ${origin.toFixed(2)}x blob | digest ok`,
  );
}
console.log(JSON.stringify({ sizeMiB: size / 2 ** 20, supernode: values.supernode, rows }));
await reg.stop();
await rm(out, { recursive: true, force: true });
process.exit(0);
