/**
 * Cache GC under a quota (LRU between watermarks, TTL, never a task in use) and crash consistency: a dfdaemon killed
 * with SIGKILL mid-download restarts with a consistent cache and never serves a corrupt piece.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { BLOCK_SIZE, TaskIndex, blockCountFor, joinBlocks, pieceSizeFor, taskIdFor } from '@damselfly/shared';
import { makeBlob, pushBlob, startRegistry, freePort } from './helpers/registry.js';
import { ROOT, getViaProxy, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { throttledRelay } from './helpers/throttle.js';
import { metricValue } from './helpers/metrics.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

t.test('GC: LRU down to the low watermark above the high one, TTL, never a task in use', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blobs = await Promise.all([0, 1, 2, 3].map((i) => pushBlob(reg.url, 'team/gc', makeBlob(4 * MiB, 200 + i))));
  const sn = await startSupernode(t);
  // Quota 14 MiB, high 90 % (12.6 MiB), low 60 % (8.4 MiB): four 4 MiB blobs are over the high mark; two must go.
  const d = await startDaemon(t, [sn.url], { diskQuota: '14MiB', gcHigh: 90, gcLow: 60, taskTtlSeconds: 3600 });
  const ids: string[] = [];
  for (const b of blobs) {
    const r = await getViaProxy(d.proxyUrl, b.url);
    t.equal(r.status, 200);
    ids.push(r.headers['x-damselfly-task-id'] as string);
    await new Promise((res) => setTimeout(res, 5));
  }
  // Blob 1 is read again (now most recently used); blob 0 is "in use" by a reader.
  t.equal((await getViaProxy(d.proxyUrl, blobs[1]!.url)).status, 200);
  const reading = d.store.get(ids[0]!)!.lease();
  const later = Date.now() + 120_000; // past the 1-minute grace
  const r = await d.gc(later);
  const gone = r.evicted.map((e) => e.taskId);
  t.same(gone.sort(), [ids[2], ids[3]].sort(), 'least recently used idle tasks evicted first, the in-use one kept');
  t.ok(r.usedBytes <= 8 * MiB, `down to ${r.usedBytes} bytes`);
  t.ok(d.store.get(ids[0]!) && d.store.get(ids[1]!), 'in-use and recently used tasks stay');
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_evictions_total', { why: 'quota' }), 2);
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_cache_bytes'), r.usedBytes);

  reading();
  const ttl = await d.gc(Date.now() + 2 * 3600_000);
  t.same(ttl.evicted.map((e) => e.why), ['ttl', 'ttl'], 'idle past the TTL: evicted');
  t.equal([...d.store.tasks()].length, 0);
  const again = await getViaProxy(d.proxyUrl, blobs[2]!.url);
  t.equal(sha(again.body), blobs[2]!.digest, 'an evicted blob is simply fetched again');

  // A task taken up (leased by a reader) while GC is removing the ones planned before it is not removed under it.
  t.equal((await getViaProxy(d.proxyUrl, blobs[3]!.url)).status, 200);
  const remove = d.store.remove.bind(d.store);
  let taken: (() => void) | undefined;
  d.store.remove = async (id: string, o?: { replacing?: boolean }) => {
    taken ??= d.store.get([ids[2]!, ids[3]!].find((x) => x !== id)!)!.lease();
    return remove(id, o);
  };
  const racing = await d.gc(Date.now() + 2 * 3600_000);
  d.store.remove = remove;
  taken?.();
  t.equal(racing.evicted.length, 1, 'one of the two idle tasks evicted; the one leased meanwhile stays');
  t.equal([...d.store.tasks()].length, 1);
});

t.test('kill -9 mid-download: restart finds a consistent cache and never serves a corrupt piece', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(32 * MiB, 301);
  const { digest } = await pushBlob(reg.url, 'team/crash', blob);
  const relay = await throttledRelay({ host: '127.0.0.1', port: Number(new URL(reg.url).port) }, 16 * 1e6);
  t.teardown(() => relay.close());
  const url = `${relay.url}/v2/team/crash/blobs/${digest}`;
  const dataDir = await tempDir(t);
  const proxyPort = await freePort();
  const healthPort = await freePort();
  const spawnDaemon = () =>
    spawn(
      process.execPath,
      [join(ROOT, 'dfdaemon/dist/cli.js'), '--data-dir', dataDir, '--proxy-port', String(proxyPort), '--upload-host', '127.0.0.1', '--upload-port', '0', '--health-port', String(healthPort), '--proxy-hosts', '*', '--parallel-pieces', '2', '--log-level', 'warn'],
      { stdio: 'ignore' },
    );
  const waitUp = async () => {
    for (let i = 0; i < 200; i++) {
      try {
        const r = await request(`http://127.0.0.1:${proxyPort}/healthy`);
        await r.body.dump();
        return;
      } catch {
        await new Promise((res) => setTimeout(res, 25));
      }
    }
    throw new Error('dfdaemon did not start');
  };
  const first = spawnDaemon();
  t.teardown(() => first.kill('SIGKILL'));
  await waitUp();
  // Back-to-source (no supernode): the download runs ~2 s through the 16 MB/s relay; kill it half-way.
  const pending = getViaProxy(`http://127.0.0.1:${proxyPort}`, url).catch(() => undefined);
  // Kill once at least two pieces are in (the metric counts bytes as they arrive), whatever the machine's load.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = await (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text();
    const got = Number(/damselfly_dfdaemon_download_bytes_total\{source="back_to_source"\} (\d+)/.exec(m)?.[1] ?? 0);
    if (got >= 10 * MiB) break;
    if (Date.now() > deadline) throw new Error('download did not progress');
    await new Promise((res) => setTimeout(res, 20));
  }
  first.kill('SIGKILL');
  await pending;

  // The index must be consistent: every piece it lists verifies against the data file.
  const taskId = taskIdFor(new URL(url));
  const index = new TaskIndex(join(dataDir, 'index'));
  await index.start();
  const present = await index.pieces(taskId);
  await index.stop();
  const P = pieceSizeFor(blob.length);
  const count = blob.length / P;
  t.ok(present.has(0) && present.size < count, `killed mid-way: ${present.size} of ${count} pieces recorded`);
  for (const [n, h] of present) {
    const piece = blob.subarray(n * P, (n + 1) * P);
    // A piece is recorded as its blocks' hashes.
    const blocks = Array.from({ length: blockCountFor(piece.length) }, (_, b) => createHash('sha256').update(piece.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE)).digest('hex'));
    t.equal(joinBlocks(blocks), h, `recorded piece ${n} is what the origin sent`);
  }

  // Damage a piece the index says is present, as a torn write or a bad disk would.
  const dataFile = join(dataDir, 'tasks', `${taskId}.data`);
  const fh = await open(dataFile, 'r+');
  await fh.write(Buffer.from('garbage!'), 0, 8, 100);
  await fh.close();

  const second = spawnDaemon();
  t.teardown(() => second.kill('SIGKILL'));
  await waitUp();
  const ranged = await getViaProxy(`http://127.0.0.1:${proxyPort}`, url, { range: 'bytes=0-1023' });
  t.equal(ranged.status, 206);
  t.ok(ranged.body.equals(blob.subarray(0, 1024)), 'the damaged piece was detected on read and fetched again');
  const whole = await getViaProxy(`http://127.0.0.1:${proxyPort}`, url);
  t.equal(whole.status, 200);
  t.equal(sha(whole.body), digest, 'the restarted daemon completes the blob correctly');
});
