/**
 * Resources stay bounded and honest: what a node drops leaves the swarm at once, a full disk is reclaimed and the
 * client still gets its blob, the supernode's disk is collected, slow origins cannot starve others.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { getViaProxy, startDaemon, startSupernode } from './helpers/cluster.js';
import { metricValue } from './helpers/metrics.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function until(what: string, ok: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

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
