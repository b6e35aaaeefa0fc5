/**
 * Resources stay bounded and honest: what a node drops leaves the swarm at once, a full disk is reclaimed and the
 * client still gets its blob, the supernode's disk is collected, slow origins cannot starve others.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { OPERATOR_TOKEN, TEST_SECRET, getViaProxy, startDaemon, startSupernode } from './helpers/cluster.js';
import { metricValue, scrapeMetric } from './helpers/metrics.js';
import { spawnDaemonProc, spawnSupernodeProc } from './helpers/procs.js';
import { until } from './helpers/until.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

t.test('a dfdaemon that drops a piece or evicts a task tells the supernode at once; nobody is sent there for it', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(12 * MiB, 801);
  const { digest, url } = await pushBlob(reg.url, 'team/evict', blob);
  const sn = await startSupernode(t);
  const a = await startDaemon(t, [sn.url]);
  const r = await getViaProxy(a.proxyUrl, url);
  t.equal(sha(r.body), digest);
  const taskId = r.headers['x-damselfly-task-id'] as string;
  const me = a.config.peerId;
  t.ok([0, 1, 2].every((n) => sn.scheduler.holders(taskId, n).has(me)), 'the node is a holder of every piece');

  await a.store.get(taskId)!.dropPiece(1);
  await until('piece 1 dropped on the supernode', () => !sn.scheduler.holders(taskId, 1).has(me));
  t.ok(sn.scheduler.holders(taskId, 0).has(me), 'only that piece');

  await a.store.remove(taskId);
  await until('task left on the supernode', () => sn.scheduler.taskPeers(taskId) === 0);
  t.notOk(sn.scheduler.holders(taskId, 0).has(me), 'none of its pieces is offered any more');

  const b = await startDaemon(t, [sn.url]);
  t.equal(sha((await getViaProxy(b.proxyUrl, url)).body), digest);
  t.equal(await metricValue(b.metrics.registry, 'damselfly_dfdaemon_piece_failures_total'), 0, 'no fetch was wasted on the evicted node');
});

t.test('GC bounds the number of tasks, whatever their bytes: a client making many small tasks cannot grow a supernode or a dfdaemon for good', async (t) => {
  const { createServer } = await import('node:http');
  // An allowed origin that answers any URL: each query string is another task.
  const origin = createServer((_req, res) => void res.writeHead(200, { 'content-length': 10 }).end('0123456789'));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (origin.closeAllConnections(), origin.close(() => r()))));
  const base = `http://127.0.0.1:${(origin.address() as { port: number }).port}/obj`;
  const sn = await startSupernode(t, { maxTasks: 5 });
  const d = await startDaemon(t, [sn.url], { maxTasks: 3 });
  const ids: string[] = [];
  for (let i = 0; i < 8; i++) {
    const r = await getViaProxy(d.proxyUrl, `${base}?v=${i}`);
    t.equal(r.body.toString(), '0123456789');
    ids.push(r.headers['x-damselfly-task-id'] as string);
    await new Promise((res) => setTimeout(res, 5));
  }
  const later = Date.now() + 2 * 60_000;
  const dr = await d.gc(later);
  t.same(dr.evicted.map((e) => e.why), Array(5).fill('count'), 'dfdaemon: 8 tasks, 3 kept');
  t.same([...d.store.tasks()].map((x) => x.info.taskId).sort(), ids.slice(5).sort(), 'the most recently used');
  await d.stop();
  await until('the peer left every task', () => ids.every((id) => sn.scheduler.taskPeers(id) === 0));
  const sr = await sn.gc(later);
  t.same(sr.evicted.map((e) => [e.taskId, e.why]), ids.slice(0, 3).map((id) => [id, 'count']), 'supernode: 8 tasks, the 3 least recently used go');
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_evictions_total', { why: 'count' }), 3);
});

t.test('supernode disk GC: LRU down to the low watermark, TTL, never a task with peers in it; an evicted blob is seeded again', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blobs = await Promise.all([0, 1, 2, 3].map((i) => pushBlob(reg.url, 'team/sngc', makeBlob(4 * MiB, 810 + i))));
  const sn = await startSupernode(t, { diskQuota: '10MiB', gcHigh: 90, gcLow: 50, taskTtlSeconds: 3600 });
  const d = await startDaemon(t, [sn.url]);
  const ids: string[] = [];
  for (const b of blobs) {
    const r = await getViaProxy(d.proxyUrl, b.url);
    t.equal(sha(r.body), b.digest);
    ids.push(r.headers['x-damselfly-task-id'] as string);
    await new Promise((res) => setTimeout(res, 5));
  }
  const later = Date.now() + 2 * 60_000;
  const busy = await sn.gc(later);
  t.same(busy.evicted, [], 'over quota (16 of 10 MiB), but every task has a peer in it: nothing is evicted');
  await d.stop();
  await until('the peer left every task', () => ids.every((id) => sn.scheduler.taskPeers(id) === 0));
  const r = await sn.gc(later);
  t.same(r.evicted.map((e) => e.taskId), ids.slice(0, 3), 'least recently used first, down to 5 MiB');
  t.ok(r.evicted.every((e) => e.why === 'quota'));
  t.equal(r.usedBytes, 4 * MiB);
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_evictions_total', { why: 'quota' }), 3);
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_cache_bytes'), 4 * MiB);
  t.notOk(sn.store.get(ids[0]!), 'an evicted task is gone from the store');
  const ttl = await sn.gc(Date.now() + 2 * 3600_000);
  t.same(ttl.evicted.map((e) => [e.taskId, e.why]), [[ids[3], 'ttl']], 'the TTL takes the last idle one');

  const before = await reg.settledBytesServed(blobs[0]!.digest);
  const d2 = await startDaemon(t, [sn.url]);
  t.equal(sha((await getViaProxy(d2.proxyUrl, blobs[0]!.url)).body), blobs[0]!.digest, 'an evicted blob is simply seeded again');
  t.ok((await reg.settledBytesServed(blobs[0]!.digest, before + 1)) > before, 'from the origin');
});

t.test('ten dripping origins cannot starve an honest pull: per-origin slots, minimum origin rate (real binaries)', async (t) => {
  const { createServer } = await import('node:http');
  const size = 2 * MiB;
  const timers = new Set<NodeJS.Timeout>();
  const servers = await Promise.all(
    Array.from({ length: 10 }, async () => {
      // Answers the size probe at once, then sends a piece at 100 bytes a second.
      const s = createServer((req, res) => {
        if (req.headers.range === 'bytes=0-0') return void res.writeHead(206, { 'content-range': `bytes 0-0/${size}`, 'content-length': 1 }).end('x');
        res.writeHead(206, { 'content-range': `bytes 0-${size - 1}/${size}`, 'content-length': size });
        const tick = setInterval(() => res.write(Buffer.alloc(100, 1)), 1000);
        timers.add(tick);
        res.on('close', () => (clearInterval(tick), timers.delete(tick)));
      });
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
      return s;
    }),
  );
  t.teardown(() => {
    for (const tick of timers) clearInterval(tick);
    for (const s of servers) s.closeAllConnections(), s.close();
  });
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(6 * MiB, 820);
  const { digest, url } = await pushBlob(reg.url, 'team/honest', blob);
  const sn = await spawnSupernodeProc(t);
  const slowNode = await spawnDaemonProc(t, [sn.url]);
  // Ten tasks at ten dripping origins, two readers each: twenty origin transfers that will not finish soon.
  for (const s of servers) {
    const u = `http://127.0.0.1:${(s.address() as { port: number }).port}/slow.bin`;
    for (let i = 0; i < 2; i++) void getViaProxy(slowNode.proxyUrl, u, { range: `bytes=${i}-${i + 9}` }).catch(() => undefined);
  }
  await until('every dripping origin is being read', () => timers.size >= 10, 10_000);
  const honest = await spawnDaemonProc(t, [sn.url]);
  const t0 = performance.now();
  const r = await getViaProxy(honest.proxyUrl, url);
  const secs = (performance.now() - t0) / 1000;
  t.equal(sha(r.body), digest);
  t.ok(secs < 5, `the honest pull took ${secs.toFixed(2)} s beside ten dripping origins`);
  t.equal(await scrapeMetric(honest.healthUrl, 'damselfly_dfdaemon_back_source_total'), 0, 'through the supernode');
  t.ok((await scrapeMetric(sn.url, 'damselfly_supernode_origin_bytes_total', {}, { authorization: `Bearer ${OPERATOR_TOKEN}` })) >= blob.length, 'seeded by the supernode');
});
