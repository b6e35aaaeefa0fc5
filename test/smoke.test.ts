import t from 'tap';
import { createHash } from 'node:crypto';
import { startRegistry, pushBlob, makeBlob } from './helpers/registry.js';
import { startSupernode, startDaemon, getViaProxy } from './helpers/cluster.js';

t.test('smoke', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(20 * 1024 * 1024 + 123);
  const { digest, url } = await pushBlob(reg.url, 'lib/app', blob);
  const sn = await startSupernode(t);
  const ds = await Promise.all([0, 1, 2].map(() => startDaemon(t, [sn.url])));
  const results = await Promise.all(ds.map((d) => getViaProxy(d.proxyUrl, url)));
  for (const r of results) {
    t.equal(r.status, 200);
    t.equal(`sha256:${createHash('sha256').update(r.body).digest('hex')}`, digest);
  }
  t.comment(`origin bytes ${reg.blobBytesServed(digest)} of ${blob.length}`);
});
