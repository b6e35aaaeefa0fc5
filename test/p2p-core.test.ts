/**
 * The core promise, end to end with a real registry: many peers, one origin read, every byte verified.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createServer } from 'node:http';
import { networkInterfaces } from 'node:os';
import { request } from 'undici';
import WebSocket from 'ws';
import { AUTH_HEADER, BLOCK_SIZE, PROTOCOL_VERSION, WS_PATH, pieceSizeFor, sessionProof } from '@damselfly/shared';
import { freePort, makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { TEST_SECRET, getViaProxy, spawnSupernode, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { dfget } from './helpers/dfget.js';
import { metricValue } from './helpers/metrics.js';
import type { Daemon } from '@damselfly/dfdaemon';
import type { Registry } from 'prom-client';
import { startBadPeer } from './helpers/bad-peer.js';
import { throttledRelay } from './helpers/throttle.js';
import { serveFile } from './helpers/file-server.js';
import { until } from './helpers/until.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

t.test('4 dfdaemons fetch one blob concurrently: identical, verified, origin read once, pieces shared', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(48 * MiB + 12345, 7);
  const { digest, url } = await pushBlob(reg.url, 'team/app', blob);
  const sn = await startSupernode(t);
  const daemons = await Promise.all([0, 1, 2, 3].map(() => startDaemon(t, [sn.url])));
  const dir = await tempDir(t);

  const runs = await Promise.all(daemons.map((d, i) => dfget([url, '-O', join(dir, `out${i}`), '--daemon', d.proxyUrl, '--no-progress'])));
  for (const [i, r] of runs.entries()) {
    t.equal(r.code, 0, `dfget ${i} exit 0 (${r.stderr.trim()})`);
    t.match(r.stderr, new RegExp(`${digest} \\(verified by the dfdaemon, linked to its cached copy\\)`), 'the daemon vouched for the digest: dfget did not hash it again (nor write it: the output is the daemon\'s copy)');
    t.equal(sha(await readFile(join(dir, `out${i}`))), digest, `file ${i} is the blob`);
  }
  t.same((await readdir(dir)).sort(), ['out0', 'out1', 'out2', 'out3'], 'no temporary files left');

  const served = await reg.settledBytesServed(digest, blob.length);
  t.comment(`registry served ${served} bytes for a ${blob.length}-byte blob to 4 peers`);
  t.ok(served >= blob.length && served <= blob.length + 1024, 'the registry served the blob about once');
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_origin_bytes_total'), blob.length);
  let peerBytes = 0;
  for (const d of daemons) peerBytes += await metricValue(d.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'peer' });
  t.comment(`bytes fetched from other peers: ${peerBytes}`);
  t.ok(peerBytes > 0, 'some pieces travelled peer to peer');
  for (const d of daemons) t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_back_source_total'), 0, 'no back-to-source');
});

t.test('a supernode bound to every interface announces an address other hosts reach, not loopback; peers fetch from it', async (t) => {
  const external = Object.values(networkInterfaces()).flat().find((a) => a?.family === 'IPv4' && !a.internal)?.address;
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(3 * MiB, 31);
  const { digest, url } = await pushBlob(reg.url, 'team/wildcard', blob);
  // Reachable from the network for the test's length: with a secret of its own, not the one in this repository.
  const secret = randomBytes(24).toString('base64url');
  const sn = await startSupernode(t, { host: '0.0.0.0', clusterSecret: secret });
  const announced = new URL(sn.url).hostname;
  if (external) t.equal(announced, external, `announced as ${announced}, this host's own address`);
  else t.equal(announced, '127.0.0.1', 'a machine with no network: loopback is all there is');
  // A dfdaemon given the announced URL (and, as on another host, announcing its own upload server at its address)
  // gets its pieces from the supernode's piece API at that address.
  const d = await startDaemon(t, [sn.url], { uploadHost: '0.0.0.0', clusterSecret: secret });
  const r = await getViaProxy(d.proxyUrl, url);
  t.equal(sha(r.body), digest);
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_back_source_total'), 0, 'through the supernode, not around it');
  t.ok((await metricValue(d.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'supernode' })) >= blob.length, 'every piece from the supernode, at its announced address');
});

t.test('a supernode piece is fetched where the peer reached the supernode, never at the address an assignment names', async (t) => {
  // Whoever answers at an announced address could frame any bytes with their own hashes: it must get no request.
  let asked = 0;
  const impostor = createServer((_req, res) => {
    asked++;
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => impostor.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise((r) => impostor.close(r)));
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(3 * MiB, 32);
  const { digest, url } = await pushBlob(reg.url, 'team/announced', blob);
  const port = await freePort();
  await startSupernode(t, { port, advertiseUrl: `http://127.0.0.1:${(impostor.address() as { port: number }).port}` });
  const d = await startDaemon(t, [`http://127.0.0.1:${port}`]);
  const r = await getViaProxy(d.proxyUrl, url);
  t.equal(sha(r.body), digest);
  t.equal(asked, 0, 'the announced address was never asked');
  t.ok((await metricValue(d.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'supernode' })) >= blob.length, 'every piece came from the supernode it is connected to');
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_back_source_total'), 0);
});

t.test('a peer serving corrupt pieces is caught, reported, blacklisted; nobody gets a corrupt byte', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(24 * MiB + 1, 11);
  const { digest, url } = await pushBlob(reg.url, 'team/corrupt', blob);
  const sn = await startSupernode(t);
  // A first honest peer makes the supernode seed every piece, then leaves.
  const first = await startDaemon(t, [sn.url]);
  t.equal(sha((await getViaProxy(first.proxyUrl, url)).body), digest);
  await first.stop();

  const bad = await startBadPeer(sn.url, url);
  t.teardown(() => bad.close());
  const daemons = await Promise.all([0, 1, 2].map(() => startDaemon(t, [sn.url])));
  const results = await Promise.all(daemons.map((d) => getViaProxy(d.proxyUrl, url)));
  for (const r of results) {
    t.equal(r.status, 200);
    t.equal(sha(r.body), digest, 'client got exactly the blob');
  }
  t.ok(bad.served > 0, `the bad peer was asked for pieces (${bad.served})`);
  const taskId = results[0]!.headers['x-damselfly-task-id'] as string;
  t.ok(sn.scheduler.isBlacklisted(taskId, bad.peerId), 'the bad peer is blacklisted for the task');
  // Before the first report it can hold at most its 8 upload slots; after it, no new requests.
  t.ok(bad.served <= 8, `and is not asked again once blacklisted (${bad.served} requests, slots 8)`);
  let corrupt = 0;
  for (const d of daemons) corrupt += await metricValue(d.metrics.registry, 'damselfly_dfdaemon_piece_failures_total', { reason: 'corrupt' });
  t.ok(corrupt >= 1, `corrupt pieces were detected (${corrupt})`);
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_blacklisted_total', { reason: 'corrupt' }), 1);
});

t.test('killing the supernode mid-download: the download completes from the origin', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(40 * MiB, 3);
  const { digest } = await pushBlob(reg.url, 'team/kill', blob);
  // 20 MB/s in front of the registry makes the download last ~2 s, so the kill lands mid-way.
  const relay = await throttledRelay({ host: '127.0.0.1', port: Number(new URL(reg.url).port) }, 20 * 1e6);
  t.teardown(() => relay.close());
  const url = `${relay.url}/v2/team/kill/blobs/${digest}`;
  const sn = await spawnSupernode(t);
  const d = await startDaemon(t, [sn.url], { parallelPieces: 2 });
  const pending = getViaProxy(d.proxyUrl, url);
  const taskDeadline = Date.now() + 20_000;
  for (;;) {
    const task = [...(await listTasks(d))][0];
    if (task && task.presentCount >= 2) break;
    if (Date.now() > taskDeadline) throw new Error('download did not start');
    await new Promise((r) => setTimeout(r, 20));
  }
  sn.child.kill('SIGKILL');
  const r = await pending;
  t.equal(r.status, 200);
  t.equal(sha(r.body), digest, 'complete and verified');
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_back_source_total', { why: 'supernode_lost' }), 1, 'back-to-source is counted');
  const b2s = await metricValue(d.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'back_to_source' });
  t.ok(b2s > 0 && b2s < blob.length, `only the missing part came from the origin directly (${b2s} bytes)`);
});

t.test('a partial cache cut into other pieces (another supernode, another rule) is replaced; the pull stays P2P', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(16 * MiB, 23);
  const { digest, url } = await pushBlob(reg.url, 'team/regeom', blob);
  const port = await freePort();
  const first = await startSupernode(t, { port, minPieceSize: 4 * MiB });
  const d = await startDaemon(t, [`http://127.0.0.1:${port}`]);
  const head = await getViaProxy(d.proxyUrl, url, { range: 'bytes=0-99' });
  t.equal(head.status, 206);
  const taskId = head.headers['x-damselfly-task-id'] as string;
  for (let i = 0; i < 500 && !d.store.get(taskId)?.has(0); i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(d.store.get(taskId)?.info.pieceSize, 4 * MiB, 'piece 0 of 4 MiB is cached');
  // The Range run lingers 2 s for more readers, then ends.
  await until('the Range run ended', () => !d.peer.running(taskId), 10_000);
  // The supernode is replaced by one that cuts the blob by the default rule and knows nothing of the old cut.
  await first.stop();
  await startSupernode(t, { port });
  const whole = await getViaProxy(d.proxyUrl, url);
  t.equal(sha(whole.body), digest, 'the blob, whole');
  t.equal(d.store.get(taskId)?.info.pieceSize, pieceSizeFor(blob.length), 'the cache entry now has the supernode’s pieces');
  // (Counted once the answer has ended, which the client may see first.)
  const p2p = () => metricValue(d.metrics.registry, 'damselfly_dfdaemon_proxy_requests_total', { kind: 'p2p', status: '200' });
  for (let i = 0; i < 100 && (await p2p()) === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(await p2p(), 1, 'through P2P');
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_tasks_total', { result: 'failed' }), 0, 'no download failed (none went around P2P)');
  // Each supernode's size probe brings the blob's first block, which its seeding of piece 0 then does not ask again.
  t.equal(await reg.settledBytesServed(digest, 4 * MiB + blob.length), 4 * MiB + blob.length, 'the origin: the old piece, then the blob once');
});

async function listTasks(d: Daemon) {
  return d.store.tasks();
}

t.test('no supernode reachable: back to source, counted', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(9 * MiB, 5);
  const { digest, url } = await pushBlob(reg.url, 'team/b2s', blob);
  const d = await startDaemon(t, ['http://127.0.0.1:1']);
  const r = await getViaProxy(d.proxyUrl, url);
  t.equal(r.status, 200);
  t.equal(sha(r.body), digest);
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_back_source_total', { why: 'supernode_unavailable' }), 1);
  // One pass over the blob for its digest: blocks fed as they landed in order, the rest read back once, no more.
  const inline = await metricValue(d.metrics.registry, 'damselfly_dfdaemon_digest_bytes_total', { how: 'inline' });
  const readBack = await metricValue(d.metrics.registry, 'damselfly_dfdaemon_digest_bytes_total', { how: 'read_back' });
  t.equal(inline + readBack, blob.length, `the digest saw every byte once (${inline} inline, ${readBack} read back)`);
  t.ok(inline >= MiB, 'the in-order prefix was taken as it landed');
});

t.test('dfget: bad input gets a clear error, non-zero exit, and no file', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(5 * MiB, 9);
  const { digest, url } = await pushBlob(reg.url, 'team/cli', blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const dir = await tempDir(t);
  const out = join(dir, 'f');

  const malformed = await dfget(['ht!tp://nope', '-O', out, '--daemon', d.proxyUrl]);
  t.equal(malformed.code, 2);
  t.match(malformed.stderr, /malformed URL/);

  const missing = await dfget([`${reg.url}/v2/team/cli/blobs/sha256:${'0'.repeat(64)}`, '-O', out, '--daemon', d.proxyUrl, '--no-progress']);
  t.not(missing.code, 0);
  t.match(missing.stderr, /404/, `unknown digest says 404: ${missing.stderr.trim()}`);

  const conflicting = await dfget([url, '-O', out, '--daemon', d.proxyUrl, '--digest', `sha256:${'1'.repeat(64)}`, '--no-progress']);
  t.not(conflicting.code, 0, 'a --digest that contradicts the blob URL fails');
  t.match(conflicting.stderr, /conflicts with the URL/, conflicting.stderr.trim());

  // A plain HTTP URL (not a registry blob) with a wrong --digest: fetched, found wrong, nothing written.
  const files = await serveFile(t, blob);
  const wrong = await dfget([files, '-O', out, '--daemon', d.proxyUrl, '--digest', `sha256:${'1'.repeat(64)}`, '--no-progress']);
  t.not(wrong.code, 0, 'a wrong --digest fails');
  // The supernode finds the origin's bytes are not that digest: the dfdaemon answers 502 "digest mismatch" before
  // the first byte (an asserted digest is never passed through unchecked) or cuts the transfer after it.
  t.match(wrong.stderr, /digest mismatch|cut the transfer .* failed verification/, wrong.stderr.trim());
  const wrongAlone = await dfget([files, '-O', out, '--standalone', '--supernode', sn.url, '--digest', `sha256:${'1'.repeat(64)}`, '--no-progress']);
  t.not(wrongAlone.code, 0, 'a wrong --digest fails standalone too');
  t.match(wrongAlone.stderr, /digest mismatch|does not match/, wrongAlone.stderr.trim());

  const badHeader = await dfget([url, '-O', out, '--header', 'no-colon', '--digest', 'md5:x']);
  t.equal(badHeader.code, 2);
  t.match(badHeader.stderr, /--header #1 must look like/);
  t.match(badHeader.stderr, /malformed digest/, 'every problem is listed');

  const noDir = await dfget([url, '-O', join(dir, 'nope', 'f')]);
  t.equal(noDir.code, 2);

  t.same(await readdir(dir), [], 'no partial or temporary file left behind');

  const ok = await dfget([url, '-O', out, '--daemon', d.proxyUrl, '--no-progress', '--verify']);
  t.equal(ok.code, 0, ok.stderr);
  t.equal(sha(await readFile(out)), digest);
  t.match(ok.stderr, new RegExp(`${digest} \\(linked to its cached copy\\)\\n`), '--verify: hashed here, no vouching');
  t.notMatch(ok.stderr, /verified by the dfdaemon/);

  // Standalone: no daemon at that address, a supernode given.
  const alone = await dfget([url, '-O', join(dir, 'g'), '--daemon', 'http://127.0.0.1:1', '--supernode', sn.url, '--no-progress']);
  t.equal(alone.code, 0, alone.stderr);
  t.match(alone.stderr, /standalone/);
  t.equal(sha(await readFile(join(dir, 'g'))), digest);
});

t.test('supernode survives malformed control messages and keeps serving', async (t) => {
  const sn = await startSupernode(t);
  const ws = new WebSocket(sn.url.replace('http', 'ws') + WS_PATH, { headers: { [AUTH_HEADER]: sessionProof(Buffer.from(TEST_SECRET), 'p') } });
  await new Promise((r) => ws.once('open', r));
  const replies: { id: number; ok: boolean; error?: { code: string } }[] = [];
  ws.on('message', (d) => replies.push(JSON.parse(d.toString())));
  ws.send('garbage');
  ws.send(JSON.stringify({ id: 7, type: 'pieces:want', taskId: 'x', want: [], max: 1 }));
  ws.send(JSON.stringify({ id: 8, type: 'pieces:want', taskId: 'f'.repeat(64), want: [0], max: 1 }));
  ws.send(Buffer.from([0, 1, 2]));
  ws.send(JSON.stringify({ id: 9, type: 'peer:hello', peerId: 'p', version: PROTOCOL_VERSION }));
  ws.send(JSON.stringify({ id: 10, type: 'task:register', url: 'file:///etc/passwd' }));
  ws.send(JSON.stringify({ id: 11, type: 'pieces:want', taskId: 'f'.repeat(64), want: [0], max: 1 }));
  // Every request with an id gets its answer (garbage and binary frames have none to get).
  await until('answers to ids 7 to 11', () => [7, 8, 9, 10, 11].every((id) => replies.some((r) => r.id === id)));
  const byId = new Map(replies.map((r) => [r.id, r]));
  t.equal(byId.get(7)?.error?.code, 'BAD_MESSAGE');
  t.equal(byId.get(8)?.error?.code, 'SN_NOT_HELLO');
  t.equal(byId.get(9)?.ok, true);
  t.equal(byId.get(10)?.error?.code, 'BAD_URL');
  t.equal(byId.get(11)?.error?.code, 'SN_TASK_NOT_FOUND');
  ws.terminate();
  const h = await request(`${sn.url}/healthy`);
  t.equal(h.statusCode, 200, 'still healthy');
  await h.body.dump();
  const bad = await request(`${sn.url}/api/v1/tasks/${'f'.repeat(64)}/pieces/abc`);
  t.equal(bad.statusCode, 400);
  await bad.body.dump();
});

t.test('control protocol versions: a v1 peer is turned away by name; a peer meeting a v1 supernode goes back to the origin', async (t) => {
  const sn = await startSupernode(t);
  const ws = new WebSocket(sn.url.replace('http', 'ws') + WS_PATH, { headers: { [AUTH_HEADER]: sessionProof(Buffer.from(TEST_SECRET), 'old') } });
  await new Promise((r) => ws.once('open', r));
  const reply = new Promise<{ ok: boolean; error?: { code: string; status: number; message: string } }>((r) => ws.once('message', (d) => r(JSON.parse(d.toString()))));
  ws.send(JSON.stringify({ id: 1, type: 'peer:hello', peerId: 'old', version: 1 }));
  const r = await reply;
  t.equal(r.error?.code, 'SN_PROTOCOL_VERSION');
  t.equal(r.error?.status, 426);
  t.match(r.error?.message, new RegExp(`v1, this supernode v${PROTOCOL_VERSION} .*upgrade dfdaemons and supernodes together`));
  ws.terminate();
  t.equal(sn.scheduler.peerCount, 0, 'it did not join');

  // The other way round: a supernode that answers hello as protocol v1 (a stand-in: the old version is not shipped).
  const { WebSocketServer } = await import('ws');
  const old = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  t.teardown(() => old.close());
  old.on('connection', (s) => s.on('message', (d) => s.send(JSON.stringify({ id: (JSON.parse(d.toString()) as { id: number }).id, ok: true, result: { version: 1 } }))));
  await new Promise((r) => old.once('listening', r));
  const oldUrl = `http://127.0.0.1:${(old.address() as { port: number }).port}`;
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(3 * 1024 * 1024, 44);
  const { url, digest } = await pushBlob(reg.url, 'team/oldsn', blob);
  const d = await startDaemon(t, [oldUrl]);
  const got = await getViaProxy(d.proxyUrl, url);
  t.equal(got.status, 200);
  t.equal(sha(got.body), digest, 'the blob came whole from the origin');
  t.ok((await metricValue(d.metrics.registry, 'damselfly_dfdaemon_back_source_total', { why: 'supernode_unavailable' })) >= 1, 'counted as back-to-source: supernode unavailable');
});

t.test('dfdaemon restart finds its cache: served with the registry and supernode gone', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(6 * MiB + 3, 13);
  const { digest, url } = await pushBlob(reg.url, 'team/restart', blob);
  const sn = await startSupernode(t);
  const dataDir = await tempDir(t);
  const d1 = await startDaemon(t, [sn.url], { dataDir });
  t.equal(sha((await getViaProxy(d1.proxyUrl, url)).body), digest);
  await d1.stop();
  await reg.stop();
  await sn.stop();
  const d2 = await startDaemon(t, [sn.url], { dataDir });
  const r = await getViaProxy(d2.proxyUrl, url);
  t.equal(r.status, 200);
  t.equal(sha(r.body), digest, 'served from the verified local cache');
});

t.test('push, not poll: a peer that got nothing is pushed its assignment when a source frees up', async (t) => {
  const { rawPeer } = await import('./helpers/ws-peer.js');
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const { url } = await pushBlob(reg.url, 'team/push', makeBlob(8 * MiB, 21));
  // One supernode slot: once it is booked, nobody else has a source.
  const sn = await startSupernode(t, { uploadSlots: 1 });
  const [x, w] = await Promise.all([rawPeer(sn.url, 'x', TEST_SECRET), rawPeer(sn.url, 'w', TEST_SECRET)]);
  t.teardown(() => (x.close(), w.close()));
  const pushes: { type: string; taskId: string; assignments: { piece: number; from: string; grant?: string }[] }[] = [];
  w.ws.on('message', (d) => {
    const m = JSON.parse(d.toString()) as { type?: string };
    if (m.type === 'pieces:assigned') pushes.push(m as (typeof pushes)[number]);
  });
  for (const [p, id] of [[x, 'x'], [w, 'w']] as const) {
    t.ok((await p.call({ type: 'peer:hello', peerId: id, version: PROTOCOL_VERSION })).ok);
    t.ok((await p.call({ type: 'task:register', url })).ok);
  }
  const info = (await x.call<{ taskId: string }>({ type: 'task:register', url })) as { ok: true; result: { taskId: string } };
  const id = info.result.taskId;
  const got = (await x.call<{ assignments: unknown[] }>({ type: 'pieces:want', taskId: id, want: [0], max: 1 })) as { ok: true; result: { assignments: unknown[] } };
  t.equal(got.result.assignments.length, 1, 'x takes the only slot');
  const none = (await w.call<{ assignments: unknown[] }>({ type: 'pieces:want', taskId: id, want: [1], max: 1 })) as { ok: true; result: { assignments: unknown[] } };
  t.equal(none.result.assignments.length, 0, 'w gets nothing now');
  await new Promise((r) => setTimeout(r, 200));
  t.same(pushes, [], 'nothing pushed while nothing changed');
  x.send({ type: 'piece:result', taskId: id, piece: 0, ok: false, reason: 'cancelled' });
  for (let i = 0; i < 100 && pushes.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(pushes.length, 1, 'the freed slot is pushed to w at once, without w asking again');
  t.equal(pushes[0]?.taskId, id);
  t.same(
    pushes[0]?.assignments.map((a) => [a.piece, a.from, typeof a.grant]),
    [[1, 'supernode', 'string']],
    'a usable assignment: the piece w wanted, from the supernode, with its grant',
  );
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_assignments_total', { how: 'pushed' }), 1);
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_assignments_total', { how: 'reply' }), 1);
});

t.test('a want naming a reader starts the origin fetch at the reader’s block before the piece is asked for', async (t) => {
  const { rawPeer } = await import('./helpers/ws-peer.js');
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const { url, digest } = await pushBlob(reg.url, 'team/reader', makeBlob(8 * MiB, 22));
  const sn = await startSupernode(t);
  const p = await rawPeer(sn.url, 'r', TEST_SECRET);
  t.teardown(() => p.close());
  t.ok((await p.call({ type: 'peer:hello', peerId: 'r', version: PROTOCOL_VERSION })).ok);
  const info = (await p.call<{ taskId: string }>({ type: 'task:register', url })) as { ok: true; result: { taskId: string } };
  const id = info.result.taskId;
  // Both pieces come from the supernode; a reader waits in piece 1, at block 2. No piece is ever requested over HTTP.
  const got = (await p.call<{ assignments: { piece: number; from: string }[] }>({ type: 'pieces:want', taskId: id, want: [0, 1], max: 2, readers: [{ piece: 1, block: 2 }] })) as {
    ok: true;
    result: { assignments: { piece: number; from: string }[] };
  };
  t.same(got.result.assignments.map((a) => [a.piece, a.from]), [[0, 'supernode'], [1, 'supernode']]);
  for (let i = 0; i < 500 && !sn.store.pieceSha(id, 1); i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(sn.store.pieceSha(id, 1), 'piece 1 was seeded on the want alone');
  t.notOk(sn.store.pieceSha(id, 0), 'piece 0 (no reader) waits for its piece request');
  const getsOf = () => reg.access.filter((l) => l.method === 'GET' && l.path.includes(`/blobs/${digest}`) && l.bytes > 1).map((l) => l.bytes);
  for (let i = 0; i < 200 && getsOf().length < 3; i++) await new Promise((r) => setTimeout(r, 10));
  const perPiece = pieceSizeFor(8 * MiB) / BLOCK_SIZE;
  t.same(
    getsOf().sort((x, y) => x - y),
    [BLOCK_SIZE, 2 * BLOCK_SIZE, (perPiece - 2) * BLOCK_SIZE].sort((x, y) => x - y),
    'the size probe (the first block), then from the reader’s block, then the rest of its piece',
  );
  t.ok(sn.store.pieces(id)?.hasBlock(0, 0), 'piece 0’s first block came with the size probe');
  t.same(
    (await p.call({ type: 'pieces:want', taskId: id, want: [0], max: 1, readers: [{ piece: 0, block: -1 }] })).ok,
    false,
    'a malformed reader is refused',
  );
});

t.test('a registration naming a Range read states its pieces and answers with their assignments: no pieces:want round trip', async (t) => {
  const { rawPeer } = await import('./helpers/ws-peer.js');
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const size = 8 * MiB;
  const { url } = await pushBlob(reg.url, 'team/register-want', makeBlob(size, 24));
  const pieceSize = pieceSizeFor(size);
  const sn = await startSupernode(t);
  const p = await rawPeer(sn.url, 'r', TEST_SECRET);
  t.teardown(() => p.close());
  t.ok((await p.call({ type: 'peer:hello', peerId: 'r', version: PROTOCOL_VERSION })).ok);
  // A reader in piece 1, at its block 2, reading into piece 2.
  const start = pieceSize + 2 * BLOCK_SIZE + 5;
  type Wanted = { pieces: number[]; max: number; assignments: { piece: number; from: string; grant?: string }[] };
  const got = (await p.call({ type: 'task:register', url, want: { start, end: 2 * pieceSize + 10, max: 3 } })) as { ok: true; result: { taskId: string; pieceSize: number; wanted?: Wanted } };
  t.ok(got.ok, 'registered');
  const id = got.result.taskId;
  t.equal(got.result.pieceSize, pieceSize);
  t.same(got.result.wanted?.pieces, [1, 2], 'the pieces covering the read are wanted');
  t.equal(got.result.wanted?.max, 3);
  t.same(
    got.result.wanted?.assignments.map((a) => [a.piece, a.from, typeof a.grant]),
    [[1, 'supernode', 'string'], [2, 'supernode', 'string']],
    'assigned in the reply, with grants',
  );
  for (let i = 0; i < 500 && !sn.store.pieceSha(id, 1); i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(sn.store.pieceSha(id, 1), 'the reader’s piece was seeded on the registration alone');
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_assignments_total', { how: 'register' }), 2);
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_assignments_total', { how: 'reply' }), 0, 'no pieces:want was needed');
  // A read past the end states nothing; a malformed one is refused by name.
  const past = (await p.call({ type: 'task:register', url, want: { start: size, end: size + 5, max: 1 } })) as { ok: true; result: { wanted?: unknown } };
  t.ok(past.ok);
  t.equal(past.result.wanted, undefined, 'nothing wanted past the end');
  const bad = (await p.call({ type: 'task:register', url, want: { start: 9, end: 3, max: 1 } })) as { ok: false; error: { message: string } };
  t.equal(bad.ok, false, 'an end before the start is refused');
  t.match(bad.error.message, /end/);
});

t.test('a Range read through a fresh dfdaemon: one supernode round trip before its first piece request', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(8 * MiB, 25);
  const { url } = await pushBlob(reg.url, 'team/one-trip', blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const at = pieceSizeFor(blob.length) + 3 * BLOCK_SIZE + 7;
  const res = await getViaProxy(d.proxyUrl, url, { range: `bytes=${at}-${at + MiB - 1}` });
  t.equal(res.status, 206);
  t.ok(res.body.equals(blob.subarray(at, at + MiB)), 'the range’s bytes');
  t.ok((await metricValue(sn.metrics.registry, 'damselfly_supernode_assignments_total', { how: 'register' })) >= 1, 'assigned in the registration’s reply');
  t.equal(await wantsAnswered(sn.metrics.registry, 'reply'), 0, 'no pieces:want was sent');
  t.equal(await wantsAnswered(sn.metrics.registry, 'register'), 1, 'one registration stated the read');
  // The run goes on as usual: a second read further on (a new piece) is asked for with pieces:want.
  const next = 3 * pieceSizeFor(blob.length);
  const more = await getViaProxy(d.proxyUrl, url, { range: `bytes=${next}-${next + 99}` });
  t.ok(more.body.equals(blob.subarray(next, next + 100)), 'a later read in the same run');
  t.ok((await wantsAnswered(sn.metrics.registry, 'reply')) >= 1, 'its piece was asked for by pieces:want');
});

/** How many wants the supernode answered: `pieces:want` requests (`reply`) or registrations stating a read (`register`). */
async function wantsAnswered(registry: Registry, how: 'reply' | 'register'): Promise<number> {
  const m = await registry.getSingleMetric('damselfly_supernode_schedule_seconds')?.get();
  const values = (m?.values ?? []) as { metricName?: string; labels: Record<string, unknown>; value: number }[];
  return values.find((v) => v.metricName === 'damselfly_supernode_schedule_seconds_count' && v.labels.how === how)?.value ?? 0;
}
