/**
 * Objects without a digest can change at their origin. A node never builds one body from two versions: pieces it kept
 * of an earlier version are dropped when a new run finds another (by the origin's ETag, through the supernode or
 * back to source), the proxy holds a client's If-Range to the version it serves, and dfget resumes only the version
 * it started.
 */
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { readFile, readdir } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { Agent, request } from 'undici';
import { BulkClient, GRANT_HEADER, issueGrant, probeOrigin, taskIdFor } from '@damselfly/shared';
import { LocalStore, backToSource, fetchPiece } from '@damselfly/peer';
import type { Daemon } from '@damselfly/dfdaemon';
import { makeBlob } from './helpers/registry.js';
import { TEST_SECRET, getViaProxy, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { serveFile, versionedOrigin } from './helpers/file-server.js';
import { httpServer } from './helpers/broken-server.js';
import { runDfget } from './helpers/dfget-child.js';

const MiB = 1024 * 1024;

/** A 3-piece object (1 MiB pieces) that is version A until `state.current` says otherwise. */
async function changing(t: Parameters<typeof versionedOrigin>[0]) {
  const versions = { A: makeBlob(3 * MiB, 71), B: makeBlob(3 * MiB, 72) };
  const state = { current: 'A' };
  const origin = await versionedOrigin(t, versions, () => state.current);
  return { url: `${origin.url}/object`, requests: origin.requests, versions, state };
}

/** Resolves once the node holds piece `n` of the task (a Range read's answer ends before its whole piece lands). */
async function holds(d: Daemon, url: string, n: number): Promise<void> {
  const id = taskIdFor(new URL(url));
  for (let i = 0; i < 200 && !d.store.get(id)?.has(n); i++) await new Promise((r) => setTimeout(r, 25));
  if (!d.store.get(id)?.has(n)) throw new Error(`piece ${n} never landed`);
}

type Changing = Awaited<ReturnType<typeof changing>>;

/** A node reads the first bytes of version A (piece 0 lands in its cache) and stops; returns its data directory. */
async function nodeKeepsPieceOfA(t: Test, o: Changing, supernodes: string[]): Promise<string> {
  const dataDir = await tempDir(t, 'damselfly-df-');
  const d1 = await startDaemon(t, supernodes, { dataDir });
  const part = await getViaProxy(d1.proxyUrl, o.url, { range: 'bytes=0-99' });
  t.equal(part.status, 206);
  t.ok(part.body.equals(o.versions.A.subarray(0, 100)), 'the first bytes of version A');
  t.equal(part.headers.etag, '"A"', 'named as version A');
  await holds(d1, o.url, 0);
  await d1.stop();
  return dataDir;
}

/** The node comes back on that directory (version B at the origin now) and GETs the whole object. */
async function comesBackForB(t: Test, o: Changing, supernodes: string[], dataDir: string): Promise<void> {
  const d2 = await startDaemon(t, supernodes, { dataDir });
  const whole = await getViaProxy(d2.proxyUrl, o.url);
  t.equal(whole.status, 200);
  t.ok(whole.body.equals(o.versions.B), 'version B whole, not the kept piece of A with B after it');
  t.equal(whole.headers.etag, '"B"');
}

t.test('pieces a node kept of an earlier version are not built on: back to source, after a restart', async (t) => {
  const o = await changing(t);
  const dataDir = await nodeKeepsPieceOfA(t, o, []);
  o.state.current = 'B';
  await comesBackForB(t, o, [], dataDir);
});

t.test('through the supernode: a record made again for a new version, and a node holding a piece of the old one', async (t) => {
  const o = await changing(t);
  const sn = await startSupernode(t, { minPieceSize: '1MiB' });
  const dataDir = await nodeKeepsPieceOfA(t, o, [sn.url]);

  // The object changes; another node's read makes the supernode find it out and drop its record of version A.
  o.state.current = 'B';
  const taskId = taskIdFor(new URL(o.url));
  await sn.seeder.register(new URL(o.url), undefined, {}, { requester: 'p' });
  const changed = await sn.seeder.ensurePiece(taskId, 1, { requester: 'p' }).then(() => 'seeded', (err: { code?: string }) => err.code);
  t.equal(changed, 'ORIGIN_CHANGED', 'the supernode found version B where A was');
  t.notOk(sn.store.get(taskId), 'and dropped its record');

  // The node comes back with piece 0 of A on disk; the supernode's new record is version B.
  await comesBackForB(t, o, [sn.url], dataDir);
});

t.test('If-Range through the proxy: a part only of the version the client names, the whole object otherwise', async (t) => {
  const o = await changing(t);
  const sn = await startSupernode(t, { minPieceSize: '1MiB' });
  const d = await startDaemon(t, [sn.url]);
  const first = await getViaProxy(d.proxyUrl, o.url);
  t.equal(first.status, 200);
  t.ok(first.body.equals(o.versions.A));
  const range = { range: 'bytes=100-199' };
  // Cached now: each answer below comes from the node's cache or a run over it.
  const same = await getViaProxy(d.proxyUrl, o.url, { ...range, 'if-range': '"A"' });
  t.equal(same.status, 206, 'the version it names: the part');
  t.ok(same.body.equals(o.versions.A.subarray(100, 200)));
  for (const other of ['"B"', 'W/"A"', 'Tue, 24 Nov 2026 08:00:00 GMT']) {
    const got = await getViaProxy(d.proxyUrl, o.url, { ...range, 'if-range': other });
    t.equal(got.status, 200, `If-Range ${other}: the whole object`);
    t.ok(got.body.equals(o.versions.A), 'whole, and its ETag says which');
    t.equal(got.headers.etag, '"A"');
  }

  // A blob held to a digest is the same bytes whatever the client compares it with: its Range always holds.
  const blob = makeBlob(2 * MiB, 73);
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
  const file = await serveFile(t, blob);
  const pinned = await getViaProxy(d.proxyUrl, file, { 'x-damselfly-digest': digest, ...range, 'if-range': '"whatever"' });
  t.equal(pinned.status, 206);
  t.ok(pinned.body.equals(blob.subarray(100, 200)));
});

t.test('dfget resumes through the dfdaemon only the version it started: another one is an error, no file', async (t) => {
  const dir = await tempDir(t);
  const A = makeBlob(1000, 74);
  const B = makeBlob(1000, 75);
  const url = 'http://origin.invalid/files/f';
  const daemon = (second: 'same' | 'changed') =>
    httpServer(t, (req, res, n) => {
      if (n === 1) {
        res.writeHead(200, { 'content-length': 1000, etag: '"A"' });
        return void res.write(A.subarray(0, 100), () => setTimeout(() => res.destroy(), 50));
      }
      t.equal(req.headers['if-range'], '"A"', 'the rest is asked of the version it started');
      t.equal(req.headers.range, 'bytes=100-');
      if (second === 'changed') return void res.writeHead(200, { 'content-length': 1000, etag: '"B"' }).end(B);
      res.writeHead(206, { 'content-length': 900, 'content-range': 'bytes 100-999/1000', etag: '"A"' }).end(A.subarray(100));
    });
  const changedDaemon = await daemon('changed');
  const r = await runDfget([url, '-O', join(dir, 'f'), '--daemon', changedDaemon.url, '--no-progress']);
  t.equal(r.code, 3, r.stderr);
  t.match(r.stderr, /cut the transfer after 100 of 1000 bytes, and the object changed since \("B" now, not "A"\)/);
  t.same(await readdir(dir), [], 'no file and no temporary file left');

  const sameDaemon = await daemon('same');
  const ok = await runDfget([url, '-O', join(dir, 'g'), '--daemon', sameDaemon.url, '--no-progress']);
  t.equal(ok.code, 0, ok.stderr);
  t.ok((await readFile(join(dir, 'g'))).equals(A), 'the same version: resumed whole');
});

t.test('a piece the new version kept as it was: the node that dropped it with the rest tells the supernode', async (t) => {
  // Version B changes the first two pieces only: its piece 2 has the same hash as A's.
  const A = makeBlob(3 * MiB, 76);
  const B = Buffer.concat([makeBlob(2 * MiB, 77), A.subarray(2 * MiB)]);
  let current = 'A';
  const origin = await versionedOrigin(t, { A, B }, () => current);
  const url = `${origin.url}/object`;
  const taskId = taskIdFor(new URL(url));
  const sn = await startSupernode(t, { minPieceSize: '1MiB' });
  const dataDir = await tempDir(t, 'damselfly-df-');
  const d1 = await startDaemon(t, [sn.url], { dataDir, peerId: 'returning' });
  for (const at of [0, 2 * MiB]) t.equal((await getViaProxy(d1.proxyUrl, url, { range: `bytes=${at}-${at + 99}` })).status, 206);
  await holds(d1, url, 0);
  await holds(d1, url, 2);
  await d1.stop();

  current = 'B';
  await sn.seeder.register(new URL(url), undefined, {}, { requester: 'p' });
  t.equal(await sn.seeder.ensurePiece(taskId, 1, { requester: 'p' }).then(() => 'seeded', (err: { code?: string }) => err.code), 'ORIGIN_CHANGED');
  await sn.seeder.register(new URL(url), undefined, {}, { requester: 'p' });
  await sn.seeder.ensurePiece(taskId, 2, { requester: 'p' });

  // Back with pieces 0 and 2 of A: piece 2's hash matches the new record, so the supernode counts it at first; the
  // node drops both with the rest of version A, and says so.
  const d2 = await startDaemon(t, [sn.url], { dataDir, peerId: 'returning' });
  // A range it holds no piece of starts a run (one it holds is served from the cache, as fetched).
  const part = await getViaProxy(d2.proxyUrl, url, { range: `bytes=${MiB}-${MiB + 99}` });
  t.equal(part.status, 206);
  t.ok(part.body.equals(B.subarray(MiB, MiB + 100)), 'version B');
  t.equal(part.headers.etag, '"B"');
  t.notOk(d2.store.get(taskId)?.has(0), 'piece 0 of A is gone');
  t.notOk(d2.store.get(taskId)?.has(2), 'the node does not hold piece 2 now');
  t.notOk(sn.scheduler.holders(taskId, 2).has('returning'), 'and the supernode does not count on it for piece 2');
});

t.test('a piece request naming the version it builds (If-Match) gets no piece of a record made again for another', async (t) => {
  // A grant issued under version A's record, used after the supernode dropped it and made one for B (a request that
  // was already on its way): the framed hashes of B would pass B's bytes, so the version is checked.
  const o = await changing(t);
  const sn = await startSupernode(t, { minPieceSize: '1MiB' });
  const taskId = taskIdFor(new URL(o.url));
  await sn.seeder.register(new URL(o.url), undefined, {}, { requester: 'p' });
  const grant = issueGrant(Buffer.from(TEST_SECRET), { taskId, piece: 1, requester: 'p' });
  o.state.current = 'B';
  t.equal(await sn.seeder.ensurePiece(taskId, 1, { requester: 'p' }).then(() => 'seeded', (err: { code?: string }) => err.code), 'ORIGIN_CHANGED');
  await sn.seeder.register(new URL(o.url), undefined, {}, { requester: 'p' });
  const ask = async (version?: string) => {
    const res = await request(`${sn.url}/api/v1/tasks/${taskId}/pieces/1`, { headers: { [GRANT_HEADER]: grant, ...(version ? { 'if-match': version } : {}) } });
    const body = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, body };
  };
  const stale = await ask('"A"');
  t.equal(stale.status, 502, 'asked for version A: refused');
  t.match(stale.body.toString(), /"code":"ORIGIN_CHANGED"/, 'as ORIGIN_CHANGED, which ends the run and drops its pieces');
  const current = await ask('"B"');
  t.equal(current.status, 200, 'asked for version B: the piece');
  t.ok(current.body.length > MiB, 'framed, whole');

  // The peer engine names its task's version on every supernode piece request.
  const store = new LocalStore(await tempDir(t, 'damselfly-df-'));
  await store.start();
  t.teardown(() => store.stop());
  const client = new BulkClient({});
  t.teardown(() => client.close());
  for (const [validator, want] of [['"A"', 'ORIGIN_CHANGED'], ['"B"', 'ok']] as const) {
    // (Opened for B, the task of A is replaced: another version.)
    const task = await store.open({ taskId, contentLength: 3 * MiB, pieceSize: MiB, pieceCount: 3, validator }, o.url);
    const got = await fetchPiece(task, { piece: 1, from: 'supernode', base: sn.url, grant }, { client, timeoutMs: 10_000, minBytesPerSecond: 0, signal: new AbortController().signal }).then(
      () => 'ok',
      (err: { remoteCode?: string }) => err.remoteCode,
    );
    t.equal(got, want, `a run building version ${validator}: ${want}`);
  }
});

/** An origin that never honours Range: every GET is the whole current version, with its ETag. */
async function rangeless(t: Parameters<typeof httpServer>[0], versions: Record<string, Buffer>, current: () => string) {
  return httpServer(t, (_req, res) => {
    const tag = current();
    res.writeHead(200, { etag: `"${tag}"`, 'content-length': versions[tag]!.length }).end(versions[tag]);
  });
}

t.test('an origin ignoring Range still names its version: a whole read is held to it, on a node and on the supernode', async (t) => {
  const versions = { A: makeBlob(3 * MiB, 81), B: makeBlob(3 * MiB, 82) };
  let current = 'A';
  const origin = await rangeless(t, versions, () => current);
  const url = `${origin.url}/object`;
  const probe = await probeOrigin({ url, dispatcher: new Agent() });
  t.same({ ranges: probe.acceptsRanges, validator: probe.validator }, { ranges: false, validator: '"A"' }, 'the probe that got the whole object names its ETag');

  // A node's task of version A (as the supernode described it) finishing from this origin: the same version, read whole.
  const store = new LocalStore(await tempDir(t, 'damselfly-df-'));
  await store.start();
  t.teardown(() => store.stop());
  const info = { taskId: taskIdFor(new URL(url)), contentLength: 3 * MiB, pieceSize: MiB, pieceCount: 3, validator: '"A"' };
  const req = { url, headers: {}, dispatcher: new Agent(), parallel: 2, signal: new AbortController().signal, onBytes: () => {} };
  const task = await store.open(info, url);
  await backToSource(task, req);
  t.same(task.missing(), [], 'version A, read whole, where the ETag matches');
  t.ok((await readFile(store.dataPath(info.taskId))).equals(versions.A));

  // Version B now: a whole read for a task of A is refused before a byte of B lands beside kept pieces of A.
  current = 'B';
  await task.dropPiece(1);
  const changed = await backToSource(task, req, { contentLength: 3 * MiB, acceptsRanges: false, validator: '"A"' }).then(() => 'done', (err: { code?: string }) => err.code);
  t.equal(changed, 'ORIGIN_CHANGED', 'a whole answer of version B for a task of A');
  t.notOk(task.has(1), 'nothing of B was recorded');

  // The supernode reads such an origin whole, held to its probe's version; another version drops the task.
  current = 'A';
  const sn = await startSupernode(t, { minPieceSize: '1MiB' });
  const meta = await sn.seeder.register(new URL(url), undefined, {}, { requester: 'p' });
  t.equal(meta.validator, '"A"', 'the supernode keeps the version of a whole answer too');
  current = 'B';
  const seeded = await sn.seeder.ensurePiece(meta.taskId, 1, { requester: 'p' }).then(() => 'seeded', (err: { code?: string }) => err.code);
  t.equal(seeded, 'ORIGIN_CHANGED', 'its whole read got version B');
  t.notOk(sn.store.get(meta.taskId), 'and the task is dropped');
});

t.test('a task replaced by another version under its id records, drops and announces nothing more', async (t) => {
  const dir = await tempDir(t, 'damselfly-df-');
  const url = 'http://origin.invalid/object';
  const info = { taskId: taskIdFor(new URL(url)), contentLength: 3 * MiB, pieceSize: MiB, pieceCount: 3 };
  const hashes = (c: string) => Array.from({ length: 4 }, () => c.repeat(64));
  const store = new LocalStore(dir);
  await store.start();
  const a = await store.open({ ...info, validator: '"A"' }, url);
  await a.recordPiece(0, hashes('a'));
  const b = await store.open({ ...info, validator: '"B"' }, url);
  t.not(a, b, 'version B is another task');
  await b.recordPiece(0, hashes('b'));
  const dropped: number[] = [];
  store.on('piece:dropped', (_id, n) => dropped.push(n));
  // What A's readers and downloads still holding it may do: none of it may touch B's records.
  await t.rejects(a.recordPiece(1, hashes('a')), { code: 'PIECE_MISSING' }, 'a piece of A lands: not recorded');
  await a.dropPiece(0);
  t.same(dropped, [], 'A dropping its piece 0 says nothing to the swarm');
  await store.stop();

  const again = new LocalStore(dir);
  await again.start();
  t.teardown(() => again.stop());
  const kept = again.get(info.taskId)!;
  t.same(kept.present(), [0], 'after a restart the index holds B and only B');
  t.equal(kept.info.validator, '"B"');
  t.equal(kept.sha(0), b.sha(0), "with B's hashes");
});
