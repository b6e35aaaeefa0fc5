#!/usr/bin/env node
// Cost of the access check on private blobs: the same blob pulled through a dfdaemon from a public registry
// and from a private (htpasswd) one, in the same run. Private pulls are measured twice: with the access answer cached
// (the default, 60 s per client credentials, repository and digest) and with every pull checked at the registry
// (--access-cache-seconds 0). Reports TTFB and total time (median of --pulls warm pulls), origin requests per pull,
// and checks every output's digest.
// First pulls: --cold N small blobs (--cold-kib each) nobody has pulled yet, each pulled once through the dfdaemon
// with the same credentials, against a direct pull of the same blob right before it: what a private blob's first
// registration costs (the supernode asks the origin for its size and, with credentials, whether it is public).
// --latency-ms puts a relay adding that delay each way in front of the private registry (direct pulls too).
//   node bench/private-pull.mjs [--size-mib 64] [--pulls 9] [--cold 9] [--cold-kib 64] [--latency-ms 10]
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { parseArgs, promisify } from 'node:util';
import { ROOT, spawnDaemon, spawnSupernode } from './procs.mjs';

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '64' },
    pulls: { type: 'string', default: '9' },
    cold: { type: 'string', default: '9' },
    'cold-kib': { type: 'string', default: '64' },
    'latency-ms': { type: 'string', default: '0' },
  },
});
const { startRegistry, pushBlob, makeBlob } = await import(join(ROOT, '.test-dist/helpers/registry.js'));
const bcrypt = (await import('bcryptjs')).default;
const size = Number(values['size-mib']) * 2 ** 20;
const pulls = Number(values.pulls);
const blob = makeBlob(size, 8);
const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
const basic = `Basic ${Buffer.from('alice:alice-pass').toString('base64')}`;

const pub = await startRegistry();
const priv = await startRegistry({ htpasswd: `alice:${bcrypt.hashSync('alice-pass', 6)}\n` });
const pubUrl = (await pushBlob(pub.url, 'bench/blob', blob)).url;
const latency = Number(values['latency-ms']);
const { latencyRelay } = await import(join(ROOT, '.test-dist/helpers/latency.js'));
const relay = latency > 0 ? await latencyRelay({ host: '127.0.0.1', port: Number(new URL(priv.url).port) }, latency) : undefined;
const privBase = relay?.url ?? priv.url;
const privUrl = (await pushBlob(priv.url, 'bench/blob', blob, { authorization: basic })).url.replace(priv.url, privBase);
const coldBlobs = [];
for (let i = 0; i < Number(values.cold); i++) {
  const b = makeBlob(Number(values['cold-kib']) * 1024, 100 + i);
  coldBlobs.push({ url: (await pushBlob(priv.url, 'bench/first', b, { authorization: basic })).url.replace(priv.url, privBase), digest: `sha256:${createHash('sha256').update(b).digest('hex')}` });
}
const sn = await spawnSupernode();
const registries = ['--registries', `${pub.url},${privBase}`];
const cached = await spawnDaemon(sn.url, 0, registries);
const unCached = await spawnDaemon(sn.url, 1, [...registries, '--access-cache-seconds', '0']);
const out = join(tmpdir(), `bench-private-${process.pid}`);

async function pull(proxy, url, headers = [], want = digest) {
  const { stdout } = await promisify(execFile)('curl', ['-sS', ...(proxy ? ['-x', proxy] : []), ...headers, '-o', out, '-w', '%{http_code} %{time_starttransfer} %{time_total}', url]);
  const [code, ttfb, total] = stdout.trim().split(' ');
  if (code !== '200') throw new Error(`status ${code} for ${url}`);
  const got = `sha256:${createHash('sha256').update(await readFile(out)).digest('hex')}`;
  if (got !== want) throw new Error(`digest mismatch: ${got}`);
  return { ttfb: Number(ttfb) * 1000, total: Number(total) * 1000 };
}
const originRequests = (reg) => reg.access.filter((l) => l.path.includes(digest.slice(7))).length;
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function series(name, proxy, url, reg, headers) {
  await pull(proxy, url, headers); // cold: seeds the blob, fills the node's cache
  const before = originRequests(reg);
  const rs = [];
  for (let i = 0; i < pulls; i++) rs.push(await pull(proxy, url, headers));
  return { name, ttfb: median(rs.map((r) => r.ttfb)), total: median(rs.map((r) => r.total)), perPull: (originRequests(reg) - before) / pulls };
}

const rows = [
  await series('public registry (no check)', cached.proxyUrl, pubUrl, pub, []),
  await series('private, access cached (default)', cached.proxyUrl, privUrl, priv, ['-H', `authorization: ${basic}`]),
  await series('private, checked every pull', unCached.proxyUrl, privUrl, priv, ['-H', `authorization: ${basic}`]),
];
// First pulls, each blob new to the whole cluster, interleaved with a direct pull of the same blob.
const auth = ['-H', `authorization: ${basic}`];
const firstDirect = [];
const firstP2p = [];
for (const b of coldBlobs) {
  firstDirect.push(await pull(undefined, b.url, auth, b.digest));
  firstP2p.push(await pull(cached.proxyUrl, b.url, auth, b.digest));
}
await Promise.all([cached.stop(), unCached.stop()]);
await sn.stop();
await relay?.close();
await Promise.all([pub.stop(), priv.stop(), rm(out, { force: true }), ...[cached, unCached, sn].map((p) => rm(p.dir, { recursive: true, force: true }))]);

const base = rows[0];
console.log(`${values['size-mib']} MiB blob, ${pulls} warm pulls each through a dfdaemon (median), every output digest-checked:`);
console.log('| pull | TTFB | total | TTFB vs public | origin requests per pull |');
console.log('| --- | --- | --- | --- | --- |');
for (const r of rows) {
  console.log(`| ${r.name} | ${r.ttfb.toFixed(1)} ms | ${r.total.toFixed(1)} ms | ${(r.ttfb / base.ttfb).toFixed(2)} | ${r.perPull.toFixed(2)} |`);
}
if (coldBlobs.length) {
  const d = median(firstDirect.map((r) => r.ttfb));
  const f = median(firstP2p.map((r) => r.ttfb));
  console.log(`\nFirst pull of a private ${values['cold-kib']} KiB blob nobody has (median of ${coldBlobs.length})${latency ? `, registry ${latency} ms away each way` : ', loopback'}:`);
  console.log(`  direct from the registry  TTFB ${d.toFixed(1)} ms, total ${median(firstDirect.map((r) => r.total)).toFixed(1)} ms`);
  console.log(`  through the dfdaemon      TTFB ${f.toFixed(1)} ms, total ${median(firstP2p.map((r) => r.total)).toFixed(1)} ms (ratio ${(f / d).toFixed(2)})`);
}
