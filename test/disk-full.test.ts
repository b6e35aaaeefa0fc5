/**
 * A full disk on a dfdaemon: the client gets an error (never a short body passed off as whole), the daemon keeps
 * running, and a blob that fits is still served. Needs root to mount a small tmpfs; skipped otherwise.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { scrapeMetric } from './helpers/metrics.js';
import { spawnDaemonProc, spawnSupernodeProc } from './helpers/procs.js';
import { runDfget } from './helpers/dfget-child.js';
import { METRICS_TOKEN, getViaProxy, tempDir } from './helpers/cluster.js';
import { until } from './helpers/until.js';

const MiB = 1024 * 1024;

async function smallDisk(size = 'size=10m'): Promise<string | undefined> {
  const dir = await mkdtemp(join(tmpdir(), 'damselfly-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', size, 'tmpfs', dir], { stdio: 'ignore' });
    return dir;
  } catch {
    await rm(dir, { recursive: true, force: true });
    return undefined;
  }
}

// Mounted by each test, as it starts (a filtered-out test leaves no mount behind); probed once for the skip.
const canMount = await smallDisk().then(async (dir) => {
  if (!dir) return false;
  execFileSync('umount', ['-l', dir]);
  await rm(dir, { recursive: true, force: true });
  return true;
});

/** A small tmpfs for this test, unmounted when it ends. */
async function mountedDisk(t: { teardown(fn: () => unknown): void }, size?: string): Promise<string> {
  const dir = (await smallDisk(size))!;
  t.teardown(async () => {
    execFileSync('umount', ['-l', dir]);
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}

t.test('disk full (real binaries, a 10 MiB tmpfs): the client still gets the blob, the daemon gives the space back and evicts LRU, the next pull works', { skip: canMount ? false : 'cannot mount a tmpfs here (needs root)' }, async (t) => {
  const disk = await mountedDisk(t);
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const old = makeBlob(4 * MiB, 20);
  const big = makeBlob(24 * MiB, 21);
  const next = makeBlob(7 * MiB, 22);
  const oldRef = await pushBlob(reg.url, 'team/full', old);
  const bigRef = await pushBlob(reg.url, 'team/full', big);
  const nextRef = await pushBlob(reg.url, 'team/full', next);
  const sn = await spawnSupernodeProc(t);
  // A quota larger than the disk, as a misconfigured node would have: only the real disk stops it.
  const d = await spawnDaemonProc(t, [sn.url], ['--data-dir', disk, '--disk-quota', '1GiB']);
  const metric = (name: string, labels: Record<string, string> = {}) => scrapeMetric(d.healthUrl, name, labels);
  const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const dataFiles = async () => (await readdir(join(disk, 'tasks'))).filter((f) => f.endsWith('.data'));
  t.equal(sha((await getViaProxy(d.proxyUrl, oldRef.url)).body), oldRef.digest, 'an older blob is cached (4 of 10 MiB)');
  t.equal((await dataFiles()).length, 1);

  const r = await getViaProxy(d.proxyUrl, bigRef.url).catch((err: Error) => ({ status: 0, body: Buffer.alloc(0), err }));
  const whole = sha(r.body) === bigRef.digest;
  if (r.status === 200 && r.body.length === big.length) {
    // The disk filled before the first byte went out: the proxy handed the request to the registry instead.
    t.ok(whole, 'a complete answer is the blob itself');
    // Counted once the upstream's answer is through, which the client may see end a moment before.
    t.equal(await until('the fallback counted', async () => (await metric('damselfly_dfdaemon_proxy_requests_total', { kind: 'fallback_disk_full' })) || undefined), 1, 'served the direct way, counted');
  } else {
    // A 200 that ended cleanly short would be a partial body passed off as whole: the answer is an error status, or a
    // transfer the client saw cut (the request rejected).
    t.ok(r.status === 0 || r.status >= 500, `the big blob fails (status ${r.status})`);
    if (r.status === 0) t.ok('err' in r && r.err, 'the client saw the transfer cut');
    t.notOk(whole, 'a cut transfer, never a complete-looking body');
  }
  // Give the pressure GC its moment, then look: the failed task is gone, and so is the idle one, least recently used.
  for (let i = 0; i < 100 && (await dataFiles()).length > 0; i++) await new Promise((res) => setTimeout(res, 20));
  t.same(await dataFiles(), [], 'the failed task and the idle LRU task were removed from the disk');
  t.equal(await metric('damselfly_dfdaemon_disk_full_total'), 1, 'the disk-full is counted');
  t.ok((await metric('damselfly_dfdaemon_evictions_total', { why: 'disk_full' })) >= 1, 'evicted under pressure, counted');

  // 7 MiB would not fit beside the old 4 MiB on this 10 MiB disk: it fits now, P2P.
  const ok = await getViaProxy(d.proxyUrl, nextRef.url);
  t.equal(ok.status, 200, 'the daemon is not stuck: the next pull works');
  t.equal(sha(ok.body), nextRef.digest);
  t.equal(await metric('damselfly_dfdaemon_proxy_requests_total', { kind: 'p2p' }), 2, 'through P2P, not around it');
  t.equal(d.child.exitCode, null, 'the dfdaemon process never went down');
});

t.test('supernode disk full (real binaries, a 12 MiB tmpfs): the seed makes room from idle tasks and the pull stays P2P', { skip: canMount ? false : 'cannot mount a tmpfs here (needs root)' }, async (t) => {
  const snDisk = await mountedDisk(t, 'size=12m');
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const old = makeBlob(6 * MiB, 23);
  const big = makeBlob(9 * MiB, 24);
  const oldRef = await pushBlob(reg.url, 'team/snfull', old);
  const bigRef = await pushBlob(reg.url, 'team/snfull', big);
  // A quota larger than the disk: only the real disk stops the supernode.
  const sn = await spawnSupernodeProc(t, ['--data-dir', snDisk, '--disk-quota', '1GiB']);
  const snMetric = (name: string, labels: Record<string, string> = {}) => scrapeMetric(sn.url, name, labels, { authorization: `Bearer ${METRICS_TOKEN}` });
  // A one-shot peer pulls the old blob through the supernode and leaves: the supernode keeps 6 of its 12 MiB, idle.
  const dir = await tempDir(t);
  const first = await runDfget([oldRef.url, '-O', join(dir, 'old'), '--standalone', '--supernode', sn.url, '--digest', oldRef.digest, '--no-progress']);
  t.equal(first.code, 0, `the old blob came through the supernode (${first.stderr.trim()})`);
  const snFiles = async () => (await readdir(join(snDisk, 'tasks'))).filter((f) => f.endsWith('.data'));
  const oldFiles = await snFiles();
  t.equal(oldFiles.length, 1, 'the supernode holds the old blob');

  // 9 MiB does not fit beside it: the seed meets the full disk, the supernode evicts the idle task, the seed goes on.
  const d = await spawnDaemonProc(t, [sn.url]);
  const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const r = await getViaProxy(d.proxyUrl, bigRef.url);
  t.equal(r.status, 200);
  t.equal(sha(r.body), bigRef.digest, 'the blob, whole');
  t.equal(await scrapeMetric(d.healthUrl, 'damselfly_dfdaemon_proxy_requests_total', { kind: 'p2p' }), 1, 'through P2P, not around it');
  t.ok((await snMetric('damselfly_supernode_disk_full_total')) >= 1, 'the full disk is counted');
  t.ok((await snMetric('damselfly_supernode_evictions_total', { why: 'disk_full' })) >= 1, 'the idle task was evicted for room, counted');
  const now = await snFiles();
  t.equal(now.length, 1, 'the supernode holds the new blob');
  t.not(now[0], oldFiles[0], 'and no longer the old one');
  t.equal(sn.child.exitCode, null, 'the supernode never went down');
});
