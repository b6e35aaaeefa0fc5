/**
 * nydusd's lazy-loading access pattern, replayed: single `Range: bytes=a-b` reads of ~1 MiB at random offsets of an
 * uncached 256 MiB blob, as absolute-URL forward-proxy requests with nydus's X-Dragonfly-* headers, from 3 dfdaemons,
 * plus ping_url health checks. Every byte must be right, and the origin must serve only the pieces covering what was
 * read, once, not the blob once per node.
 */
import t from 'tap';
import { request } from 'undici';
import { BLOCK_SIZE, pieceSizeFor } from '@damselfly/shared';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { getViaProxy, startDaemon, startSupernode } from './helpers/cluster.js';
import { metricValue } from './helpers/metrics.js';

const MiB = 1024 * 1024;

/** Deterministic offsets (xorshift), so a failure replays exactly. */
function offsets(seed: number, count: number, max: number): number[] {
  let x = seed;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.push((x >>> 0) % max);
  }
  return out;
}

t.test('nydus replay: 3 nodes, random 1 MiB range reads of an uncached 256 MiB blob', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const size = 256 * MiB;
  const blob = makeBlob(size, 77);
  const { digest, url } = await pushBlob(reg.url, 'nydus/blob', blob);
  const sn = await startSupernode(t);
  const daemons = await Promise.all([0, 1, 2].map(() => startDaemon(t, [sn.url], { registries: [reg.url], proxyHosts: [] })));
  const pieceSize = pieceSizeFor(size);

  // A shared pool of hot offsets (every node reads the same lazily-loaded files) plus a few of each node's own.
  const hot = offsets(12345, 6, size - MiB);
  const reads = daemons.map((_, i) => [...hot, ...offsets(999 + i, 3, size - MiB)]);
  const covered = new Set<number>();
  for (const list of reads) for (const off of list) for (let n = Math.floor(off / pieceSize); n <= Math.floor((off + MiB - 1) / pieceSize); n++) covered.add(n);

  for (const d of daemons) {
    const ping = await request(`${d.healthUrl}/server/ping`);
    t.equal(ping.statusCode, 200, 'ping_url answers');
    await ping.body.dump();
  }
  const nydusHeaders = { 'x-dragonfly-use-p2p': 'true', 'x-dragonfly-priority': '1', 'x-dragonfly-prefetch': 'false' };
  const replay = async (i: number) => {
    for (const off of reads[i]!) {
      const r = await getViaProxy(daemons[i]!.proxyUrl, url, { ...nydusHeaders, range: `bytes=${off}-${off + MiB - 1}` });
      if (r.status !== 206 || !r.body.equals(blob.subarray(off, off + MiB))) t.fail(`node ${i} read @${off}: status ${r.status}, wrong bytes`);
    }
  };
  // The first node starts a moment earlier (containers never start in the same millisecond); the others then run
  // together, and find the hot pieces on it.
  await replay(0);
  await Promise.all([replay(1), replay(2)]);
  t.pass(`${reads.flat().length} range reads, every byte correct`);

  // The pieces the reads cover, and the blob's first block, which the supernode's size probe brings with the size.
  const union = [...covered].reduce((s, n) => s + Math.min(pieceSize, size - n * pieceSize), 0) + (covered.has(0) ? 0 : BLOCK_SIZE);
  const served = await reg.settledBytesServed(digest);
  t.comment(`origin served ${served} bytes; union of pieces read and the first block ${union} (${covered.size} pieces of ${size / pieceSize}); blob ${size}`);
  t.ok(served <= union, 'origin bytes = the pieces covering the ranges and the first block, each once');
  t.ok(served < size / 2, 'far from the whole blob');
  // Reads are answered from their first blocks while the rest of their pieces still arrives (cut-through): the
  // supernode's count reaches the union once those pieces are in.
  let counted = 0;
  for (let i = 0; i < 500 && counted < union; i++) {
    counted = await metricValue(sn.metrics.registry, 'damselfly_supernode_origin_bytes_total');
    if (counted < union) await new Promise((r) => setTimeout(r, 10));
  }
  t.equal(counted, union, 'the supernode fetched exactly the pieces covering the reads');
  let peerBytes = 0;
  for (const d of daemons) peerBytes += await metricValue(d.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'peer' });
  t.ok(peerBytes > 0, `hot pieces were shared between nodes (${peerBytes} bytes peer to peer)`);
});

t.test('prefetch: a Range read with X-Dragonfly-Prefetch pulls the rest of the blob in the background', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(20 * MiB, 78);
  const { url } = await pushBlob(reg.url, 'nydus/prefetch', blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const r = await getViaProxy(d.proxyUrl, url, { range: 'bytes=0-1023', 'x-dragonfly-prefetch': 'true' });
  t.equal(r.status, 206);
  const taskId = r.headers['x-damselfly-task-id'] as string;
  const deadline = Date.now() + 10_000;
  while (!d.store.get(taskId)?.complete && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
  t.ok(d.store.get(taskId)?.complete, 'the whole blob arrived and was verified');
  await reg.stop();
  const later = await getViaProxy(d.proxyUrl, url, { range: `bytes=${15 * MiB}-${15 * MiB + 9}` });
  t.equal(later.status, 206);
  t.ok(later.body.equals(blob.subarray(15 * MiB, 15 * MiB + 10)), 'later reads come from the local cache, registry gone');
});
