#!/usr/bin/env node
// Bandwidth limits benchmark: each limit against the rate it actually let through, on loopback (where nothing else
// holds a transfer back), with real processes and a real registry; every output digest-checked.
//   node bench/limits.mjs [--size-mib 64] [--rate-mib 20]
// - dfdaemon downloadRate: a pull through its proxy, blob bytes / time;
// - dfdaemon uploadRate: a second node pulls the blob the first one holds, the first one's upload bytes / time;
// - dfdaemon backSourceRate: a node without supernode pulls from the origin itself;
// - supernode originRate: a pull of a blob nobody has, the registry's bytes / time.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from 'undici';
import { ROOT, spawnDaemon, spawnSupernode } from './procs.mjs';

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '64' }, 'rate-mib': { type: 'string', default: '20' } } });
const MiB = 2 ** 20;
const size = Number(values['size-mib']) * MiB;
const rate = Number(values['rate-mib']) * MiB;
const { startRegistry, pushBlobStream } = await import(join(ROOT, '.test-dist/helpers/registry.js'));
const reg = await startRegistry();
const procs = [];
const blobs = [];
for (let i = 0; i < 4; i++) blobs.push(await pushBlobStream(reg.url, `bench/limits${i}`, size, 40 + i));

/** Pulls a blob through a dfdaemon's proxy, hashing it as it streams; returns seconds. */
async function pull(proxyUrl, blob) {
  // An absolute-form request to the proxy, as containerd and nydusd send them.
  const client = new Client(proxyUrl);
  const t0 = performance.now();
  const res = await client.request({ method: 'GET', path: blob.url });
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
  const h = createHash('sha256');
  for await (const c of res.body) h.update(c);
  const secs = (performance.now() - t0) / 1000;
  await client.close();
  if (`sha256:${h.digest('hex')}` !== blob.digest) throw new Error('digest mismatch');
  return secs;
}
async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name) && !line.startsWith('#')) sum += Number(line.split(' ').pop());
  return sum;
}
const rows = [];
const row = (limit, bytes, secs) => {
  const got = bytes / secs;
  rows.push({ limit, configured: rate, measured: got, ratio: got / rate });
};

try {
  const mib = `${values['rate-mib']}MiB`;
  // Download limit: one node, everything from the supernode.
  {
    const sn = await spawnSupernode();
    procs.push(sn);
    const a = await spawnDaemon(sn.url, 0, ['--registries', reg.url, '--download-rate', mib]);
    procs.push(a);
    row('dfdaemon downloadRate', size, await pull(a.proxyUrl, blobs[0]));
    // Upload limit: a second node pulls what the first holds; the first may upload only so fast.
    const up = await spawnDaemon(sn.url, 1, ['--registries', reg.url, '--upload-rate', mib]);
    procs.push(up);
    await pull(up.proxyUrl, blobs[1]);
    const b = await spawnDaemon(sn.url, 2, ['--registries', reg.url]);
    procs.push(b);
    const before = await metric(up.info.health, 'damselfly_dfdaemon_upload_bytes_total');
    const secs = await pull(b.proxyUrl, blobs[1]);
    row('dfdaemon uploadRate', (await metric(up.info.health, 'damselfly_dfdaemon_upload_bytes_total')) - before, secs);
  }
  // Back-to-source limit: no supernode at all.
  {
    const c = await spawnDaemon('', 3, ['--registries', reg.url, '--back-source-rate', mib]);
    procs.push(c);
    row('dfdaemon backSourceRate', size, await pull(c.proxyUrl, blobs[2]));
  }
  // Origin limit on a fresh supernode.
  {
    const sn = await spawnSupernode(['--origin-rate', mib]);
    procs.push(sn);
    const d = await spawnDaemon(sn.url, 4, ['--registries', reg.url]);
    procs.push(d);
    const before = reg.blobBytesServed(blobs[3].digest);
    const secs = await pull(d.proxyUrl, blobs[3]);
    row('supernode originRate', reg.blobBytesServed(blobs[3].digest) - before, secs);
  }
} finally {
  for (const p of procs.reverse()) await p.stop();
  await reg.stop();
}

console.log(`\n${size / MiB} MiB per pull, limits ${rate / MiB} MiB/s, loopback`);
console.log('| limit | configured | measured | measured / configured |');
console.log('| --- | --- | --- | --- |');
for (const r of rows) console.log(`| ${r.limit} | ${(r.configured / MiB).toFixed(1)} MiB/s | ${(r.measured / MiB).toFixed(1)} MiB/s | ${r.ratio.toFixed(3)} |`);
