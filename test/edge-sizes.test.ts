/** Blob sizes at the edges: empty, one byte, exactly one piece, one piece plus one byte; whole and Range reads. */
import t from 'tap';
import { createHash } from 'node:crypto';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { getViaProxy, startDaemon, startSupernode } from './helpers/cluster.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

t.test('edge sizes through the supernode and back-to-source', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const sn = await startSupernode(t);
  const p2p = await startDaemon(t, [sn.url]);
  const b2s = await startDaemon(t, []);
  for (const size of [0, 1, 4 * MiB, 4 * MiB + 1]) {
    const blob = size ? makeBlob(size, 900 + size) : Buffer.alloc(0);
    const { digest, url } = await pushBlob(reg.url, 'team/edge', blob);
    for (const [name, d] of [['p2p', p2p], ['back-to-source', b2s]] as const) {
      const r = await getViaProxy(d.proxyUrl, url);
      t.equal(r.status, 200, `${size} bytes ${name}: 200`);
      t.equal(sha(r.body), digest, `${size} bytes ${name}: right bytes`);
      if (size > 0) {
        const last = await getViaProxy(d.proxyUrl, url, { range: 'bytes=-1' });
        t.equal(last.status, 206);
        t.ok(last.body.equals(blob.subarray(size - 1)), `${size} bytes ${name}: last byte`);
      } else {
        const none = await getViaProxy(d.proxyUrl, url, { range: 'bytes=0-' });
        t.equal(none.status, 416, 'no byte of an empty blob is satisfiable');
      }
    }
  }
});
