/**
 * The trust boundary, tried as an attacker on the cluster network would: every line is an attack that worked before
 * the cluster had a secret, reproduced against the real supernode and dfdaemon, and now refused.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { chmod, chown, readFile, readdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { BlockList } from 'node:net';
import { networkInterfaces } from 'node:os';
import { Agent, request } from 'undici';
import { BLOCK_SIZE, GRANT_HEADER, PROTOCOL_VERSION, checkOriginAccess, issueGrant, pieceSizeFor, sessionProof, type Assignment, type WantResult, type TaskInfo } from '@damselfly/shared';
import { pieceUrl } from '@damselfly/peer';

/** The upgrade status a refused session got (0 if it was let in). */
const refused = (p: Promise<RawPeer>) => p.then((peer) => (peer.close(), 0), (err: { status?: number }) => err.status ?? -1);
import { makeBlob, pushBlob, startRegistry, freePort } from './helpers/registry.js';
import { ROOT, METRICS_TOKEN, OPERATOR_TOKEN, TEST_SECRET, getViaProxy, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { rawPeer, type RawPeer } from './helpers/ws-peer.js';
import { metricValue } from './helpers/metrics.js';
import { RECENTLY_HEARD_MS, TAKEOVER_PROBE_MS, checkAdvertisedBase } from '@damselfly/supernode';
import { serveFile } from './helpers/file-server.js';
import { spawnSupernodeProc } from './helpers/procs.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const bearer = { authorization: `Bearer ${OPERATOR_TOKEN}` };

async function errorCode(p: Promise<{ ok: boolean; error?: { code: string } } | { ok: true }>): Promise<string | undefined> {
  const r = (await p) as { ok: boolean; error?: { code: string } };
  return r.ok ? 'OK' : r.error?.code;
}

t.test('only cluster members get a control channel: no proof, a wrong secret or a replayed proof is refused at the upgrade', async (t) => {
  const sn = await startSupernode(t);
  t.equal(await refused(rawPeer(sn.url, 'p1', undefined)), 401, 'no proof: 401, no socket');
  t.equal(await refused(rawPeer(sn.url, 'p1', 'not-the-cluster-secret-at-all')), 401, 'wrong secret: 401');
  const proof = sessionProof(Buffer.from(TEST_SECRET), 'p1');
  const first = await rawPeer(sn.url, 'p1', undefined, proof);
  t.teardown(() => first.close());
  t.equal(await refused(rawPeer(sn.url, 'p1', undefined, proof)), 401, 'a captured proof cannot be replayed');
  const stale = sessionProof(Buffer.from(TEST_SECRET), 'p2', Date.now() - 10 * 60_000);
  t.equal(await refused(rawPeer(sn.url, 'p2', undefined, stale)), 401, 'an old proof has expired');
  t.ok((await metricValue(sn.metrics.registry, 'damselfly_supernode_rejected_total')) >= 4, 'refusals are counted');
});

t.test('a session is one peer: its authenticated id only, one hello, no taking over a live id, no ghost peers', async (t) => {
  const sn = await startSupernode(t);
  const honest = await rawPeer(sn.url, 'honest', TEST_SECRET);
  t.teardown(() => honest.close());
  t.equal(await errorCode(honest.call({ type: 'peer:hello', peerId: 'honest', version: PROTOCOL_VERSION })), 'OK');
  t.equal(await errorCode(honest.call({ type: 'peer:hello', peerId: 'honest', version: PROTOCOL_VERSION })), 'SN_ALREADY_HELLO', 'a second hello on the socket');
  t.equal(await errorCode(honest.call({ type: 'peer:hello', peerId: 'other', version: PROTOCOL_VERSION })), 'SN_ALREADY_HELLO', 'one socket is one peer');

  const evil = await rawPeer(sn.url, 'evil', TEST_SECRET);
  t.equal(await errorCode(evil.call({ type: 'peer:hello', peerId: 'honest', version: PROTOCOL_VERSION })), 'SN_PEER_MISMATCH', 'hello must name the authenticated id');
  // An insider holding the secret can authenticate as any id, but not one a live session holds.
  const thief = await rawPeer(sn.url, 'honest', TEST_SECRET);
  t.equal(await errorCode(thief.call({ type: 'peer:hello', peerId: 'honest', version: PROTOCOL_VERSION })), 'SN_PEER_ID_TAKEN', 'a live id cannot be taken over');
  thief.close();
  await new Promise((r) => setTimeout(r, 100));
  t.equal(sn.scheduler.peerCount, 1, "the thief's disconnect did not erase the honest peer");

  // 20,000 hellos on one socket (the old ghost-peer attack) leave one peer.
  const spam = await rawPeer(sn.url, 'spammer', TEST_SECRET);
  t.equal(await errorCode(spam.call({ type: 'peer:hello', peerId: 'spammer', version: PROTOCOL_VERSION })), 'OK');
  for (let i = 0; i < 20_000; i++) spam.send({ type: 'peer:hello', id: 1000 + i, peerId: `ghost-${i}`, version: PROTOCOL_VERSION });
  await spam.call({ type: 'pieces:want', taskId: 'f'.repeat(64), want: [0], max: 1 });
  await new Promise((r) => setTimeout(r, 300));
  t.equal(sn.scheduler.peerCount, 2, 'no ghost peers');
  spam.close();
  evil.close();
});

t.test('a peer id held by a socket that no longer answers is taken by the peer saying hello again, at once', async (t) => {
  const sn = await startSupernode(t);
  // Its host lost the network: the socket is still open here, but nothing answers on it.
  const gone = await rawPeer(sn.url, 'node-a', TEST_SECRET, undefined, { deaf: true });
  t.teardown(() => gone.close());
  t.equal(await errorCode(gone.call({ type: 'peer:hello', peerId: 'node-a', version: PROTOCOL_VERSION })), 'OK');
  const ended = new Promise<void>((r) => gone.ws.once('close', () => r()));
  const back = await rawPeer(sn.url, 'node-a', TEST_SECRET);
  t.teardown(() => back.close());
  // Heard from a moment ago, a holder keeps its id without being asked (a live, busy peer is not pushed out).
  t.equal(await errorCode(back.call({ type: 'peer:hello', peerId: 'node-a', version: PROTOCOL_VERSION })), 'SN_PEER_ID_TAKEN', 'a holder heard from just now keeps the id');
  await new Promise((r) => setTimeout(r, RECENTLY_HEARD_MS + 100));
  const t0 = performance.now();
  t.equal(await errorCode(back.call({ type: 'peer:hello', peerId: 'node-a', version: PROTOCOL_VERSION })), 'OK', 'the same peer, back: let in');
  const took = performance.now() - t0;
  t.ok(took >= TAKEOVER_PROBE_MS - 50, 'the holder had its time to answer a ping first');
  // Not the ping's full timeout again, nor a session's 30 s: the margin is for a busy machine.
  t.ok(took < TAKEOVER_PROBE_MS + 3000, `and no more: let in ${Math.round(took)} ms after its hello`);
  const outcome = await Promise.race([ended.then(() => 'closed'), new Promise<string>((r) => setTimeout(() => r('still open'), 3000).unref())]);
  t.equal(outcome, 'closed', 'the silent session was ended');
  t.equal(sn.scheduler.peerCount, 1, 'one peer, not two');

  // The same with a real dfdaemon coming back as node-b: it pulls through the supernode, not back to the origin.
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(3 * MiB, 77);
  const { digest, url } = await pushBlob(reg.url, 'team/back', blob);
  const stale = await rawPeer(sn.url, 'node-b', TEST_SECRET, undefined, { deaf: true });
  t.teardown(() => stale.close());
  t.equal(await errorCode(stale.call({ type: 'peer:hello', peerId: 'node-b', version: PROTOCOL_VERSION })), 'OK');
  await new Promise((r) => setTimeout(r, RECENTLY_HEARD_MS + 100));
  const d = await startDaemon(t, [sn.url], { peerId: 'node-b' });
  const r = await getViaProxy(d.proxyUrl, url);
  t.equal(sha(r.body), digest, 'the blob, whole');
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'supernode' }), blob.length, 'every byte through the supernode');
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'back_to_source' }), 0, 'none from the origin behind its back');
});

t.test('hellos arriving together for a silent holder’s id share one ping, and one of them gets the id', async (t) => {
  const sn = await startSupernode(t);
  const gone = await rawPeer(sn.url, 'node-d', TEST_SECRET, undefined, { deaf: true });
  t.teardown(() => gone.close());
  t.equal(await errorCode(gone.call({ type: 'peer:hello', peerId: 'node-d', version: PROTOCOL_VERSION })), 'OK');
  let pings = 0;
  gone.ws.on('ping', () => pings++);
  await new Promise((r) => setTimeout(r, RECENTLY_HEARD_MS + 100));
  const claimants = await Promise.all([1, 2, 3].map(() => rawPeer(sn.url, 'node-d', TEST_SECRET)));
  t.teardown(() => claimants.forEach((c) => c.close()));
  const answers = await Promise.all(claimants.map((c) => errorCode(c.call({ type: 'peer:hello', peerId: 'node-d', version: PROTOCOL_VERSION }))));
  t.equal(pings, 1, 'the silent holder was pinged once for three hellos');
  t.same(answers.filter((a) => a === 'OK').length, 1, 'one of them got the id');
  t.same(answers.filter((a) => a === 'SN_PEER_ID_TAKEN').length, 2, 'the others were refused, as for any live holder');
  t.equal(sn.scheduler.peerCount, 1, 'one peer');
});

t.test('hellos sent together on one socket: one is answered, the others are refused at once while it is', async (t) => {
  const sn = await startSupernode(t);
  // The id's holder is silent, so the first hello waits on its ping (then looks up the advertised name).
  const gone = await rawPeer(sn.url, 'node-g', TEST_SECRET, undefined, { deaf: true });
  t.teardown(() => gone.close());
  t.equal(await errorCode(gone.call({ type: 'peer:hello', peerId: 'node-g', version: PROTOCOL_VERSION })), 'OK');
  await new Promise((r) => setTimeout(r, RECENTLY_HEARD_MS + 100));
  const p = await rawPeer(sn.url, 'node-g', TEST_SECRET);
  t.teardown(() => p.close());
  const hello = { type: 'peer:hello', peerId: 'node-g', uploadUrl: 'http://localhost:65002', version: PROTOCOL_VERSION };
  const t0 = performance.now();
  const answers = await Promise.all(Array.from({ length: 8 }, () => errorCode(p.call(hello)).then((code) => ({ code, ms: performance.now() - t0 }))));
  t.equal(answers.filter((a) => a.code === 'OK').length, 1, 'one hello was answered (the holder did not answer its ping)');
  const refused = answers.filter((a) => a.code !== 'OK');
  t.same(refused.map((a) => a.code), Array(7).fill('SN_HELLO_PENDING'), 'the others were refused as sent while it was being answered');
  // Each after a ping of its own would come a ping's timeout or more after the start, and after the one answered.
  const ok = answers.find((a) => a.code === 'OK')!;
  t.ok(refused.every((a) => a.ms < ok.ms && a.ms < TAKEOVER_PROBE_MS - 200), `at once (${Math.max(...refused.map((a) => Math.round(a.ms)))} ms; the answered one ${Math.round(ok.ms)} ms), not each after a ping and a lookup of its own`);
  t.equal(await errorCode(p.call(hello)), 'SN_ALREADY_HELLO', 'once answered, a hello is a second hello');
  t.equal(sn.scheduler.peerCount, 1, 'one peer');
});

t.test('a registration the silent session still had under way does not take the new session’s credentials with it', async (t) => {
  // An origin whose first answer (the registration's size probe) waits until the test lets it go.
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let asked!: () => void;
  const probeAsked = new Promise<void>((r) => (asked = r));
  const body = Buffer.alloc(4096, 7);
  const origin = createServer((req, res) => {
    asked();
    void released.then(() => {
      res.writeHead(206, { 'content-length': 1, 'content-range': `bytes 0-0/${body.length}` });
      res.end(body.subarray(0, 1));
    });
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (origin.closeAllConnections(), origin.close(() => r()))));
  const url = `http://127.0.0.1:${(origin.address() as { port: number }).port}/blob.bin`;
  const sn = await startSupernode(t);
  // Another peer's registration creates the task; the old session's joins it (and so outlives that session).
  const other = await rawPeer(sn.url, 'node-x', TEST_SECRET);
  t.teardown(() => other.close());
  t.equal(await errorCode(other.call({ type: 'peer:hello', peerId: 'node-x', version: PROTOCOL_VERSION })), 'OK');
  const created = other.call({ type: 'task:register', url, headers: { authorization: 'Bearer x' } });
  await probeAsked;
  const old = await rawPeer(sn.url, 'node-c', TEST_SECRET, undefined, { deaf: true });
  t.teardown(() => old.close());
  t.equal(await errorCode(old.call({ type: 'peer:hello', peerId: 'node-c', version: PROTOCOL_VERSION })), 'OK');
  void old.call({ type: 'task:register', url, headers: { authorization: 'Bearer old' } });
  await new Promise((r) => setTimeout(r, RECENTLY_HEARD_MS + 100));
  const back = await rawPeer(sn.url, 'node-c', TEST_SECRET);
  t.teardown(() => back.close());
  t.equal(await errorCode(back.call({ type: 'peer:hello', peerId: 'node-c', version: PROTOCOL_VERSION })), 'OK', 'the id changed hands');
  const registered = back.call({ type: 'task:register', url, headers: { authorization: 'Bearer new' } });
  await new Promise((r) => setTimeout(r, 100));
  release();
  t.equal(await errorCode(registered), 'OK', 'the new session registered (joining the registration under way)');
  t.equal(await errorCode(created), 'OK');
  await new Promise((r) => setTimeout(r, 100));
  t.equal(sn.seeder.heldCredentials, 2, 'node-x’s and the new node-c’s: the old session’s late registration did not forget node-c’s');
});

t.test('a registration that fails or is cut by its session’s close holds no credentials; those under way count toward the task cap', async (t) => {
  // Nothing at /missing; under /stall/ the origin never answers (the size probe and the anonymous check wait).
  const stalled: string[] = [];
  const origin = createServer((req, res) => {
    if (req.url?.startsWith('/stall/')) return void stalled.push(req.url);
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (origin.closeAllConnections(), origin.close(() => r()))));
  const base = `http://127.0.0.1:${(origin.address() as { port: number }).port}`;
  const sn = await startSupernode(t, { sessionMaxTasks: 2 });
  const p = await rawPeer(sn.url, 'node-f', TEST_SECRET);
  t.teardown(() => p.close());
  t.equal(await errorCode(p.call({ type: 'peer:hello', peerId: 'node-f', version: PROTOCOL_VERSION })), 'OK');
  const headers = { authorization: `Bearer ${'s'.repeat(8000)}` };
  t.equal(await errorCode(p.call({ type: 'task:register', url: `${base}/missing`, headers })), 'ORIGIN_NOT_FOUND');
  t.equal(sn.seeder.heldCredentials, 0, 'a registration the origin refused holds no credentials');

  for (const i of [0, 1]) void p.call({ type: 'task:register', url: `${base}/stall/${i}`, headers });
  for (let i = 0; i < 200 && new Set(stalled).size < 2; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(sn.seeder.heldCredentials, 2, 'two registrations under way hold theirs');
  const third = await Promise.race([errorCode(p.call({ type: 'task:register', url: `${base}/stall/2`, headers })), new Promise((r) => setTimeout(() => r('no answer in 2 s'), 2_000))]);
  t.equal(third, 'SN_TOO_MANY_TASKS', 'registrations under way count toward the session’s task cap');
  p.close();
  for (let i = 0; i < 200 && sn.seeder.heldCredentials > 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(sn.seeder.heldCredentials, 0, 'the closed session’s unfinished registrations left nothing');
});

t.test('an advertised upload address is scheme://host:port of the session itself, nothing more', async (t) => {
  const sn = await startSupernode(t);
  const cases: [string, string][] = [
    ['http://internal/admin?x=', 'path and query'],
    ['http://127.0.0.1:9000/pieces', 'a path'],
    ['http://user:pw@127.0.0.1:9000', 'userinfo'],
    ['http://10.11.12.13:65002', 'another host than the session'],
    ['file:///etc/passwd', 'not http'],
  ];
  for (const [uploadUrl, why] of cases) {
    const p = await rawPeer(sn.url, `adv-${why.length}`, TEST_SECRET);
    t.equal(await errorCode(p.call({ type: 'peer:hello', peerId: `adv-${why.length}`, uploadUrl, version: PROTOCOL_VERSION })), 'SN_BAD_ADVERTISE', `${uploadUrl}: refused (${why})`);
    p.close();
  }
  const ok = await rawPeer(sn.url, 'adv-ok', TEST_SECRET);
  t.teardown(() => ok.close());
  t.equal(await errorCode(ok.call({ type: 'peer:hello', peerId: 'adv-ok', uploadUrl: 'http://127.0.0.1:9000', version: PROTOCOL_VERSION })), 'OK', 'its own address is fine');
  // A session over loopback is on the supernode's own host: that host's interface addresses are its own too.
  const hostIp = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
  if (hostIp) {
    const local = await rawPeer(sn.url, 'adv-host', TEST_SECRET);
    t.equal(await errorCode(local.call({ type: 'peer:hello', peerId: 'adv-host', uploadUrl: `http://${hostIp}:9000`, version: PROTOCOL_VERSION })), 'OK', `this host's ${hostIp} from a loopback session`);
    local.close();
  }
  // Downloaders build piece URLs themselves: a hostile base never becomes a request.
  const a: Assignment = { piece: 3, from: 'x', base: 'http://internal/admin?x=' };
  t.throws(() => pieceUrl('a'.repeat(64), a), { code: 'DF_PIECE_FAILED' });
  t.equal(pieceUrl('a'.repeat(64), { ...a, base: 'https://10.0.0.5:65002' }), `https://10.0.0.5:65002/pieces/${'a'.repeat(64)}/3`);
});

t.test('an advertised name that does not resolve in time refuses the hello rather than holding it', async (t) => {
  const never = () => new Promise<string[]>(() => {});
  const within = <T>(p: Promise<T>) => Promise.race([p.then(() => 'resolved', (err: Error & { code?: string }) => `${err.code ?? 'error'}: ${err.message}`), new Promise<string>((r) => setTimeout(() => r('still waiting after 2 s'), 2_000))]);
  t.match(await within(checkAdvertisedBase('http://stuck.example:65002', '127.0.0.1', new BlockList(), { deadlineMs: 200, resolve: never })), /^SN_BAD_ADVERTISE: .*stuck\.example did not resolve within 200 ms/, 'past its deadline: refused');
  const closing = new AbortController();
  setTimeout(() => closing.abort(new Error('session closed')), 50);
  t.equal(await within(checkAdvertisedBase('http://stuck.example:65002', '127.0.0.1', new BlockList(), { signal: closing.signal, resolve: never })), 'error: session closed', 'its session closing ends the wait');
  t.match(await checkAdvertisedBase('http://localhost:65002', '127.0.0.1', new BlockList()), /^http:\/\/(127\.0\.0\.1|\[::1\]):65002$/, 'a name that resolves is checked as before');
});

t.test('an advertised name is handed on as the address it was checked at, never as the name', async (t) => {
  const names: Record<string, string[]> = { 'multi.example': ['10.9.9.9', '192.0.2.7'], 'other.example': ['10.9.9.9'], 'six.example': ['2001:db8::7'] };
  const resolve = async (host: string) => names[host] ?? [];
  // One of the name's addresses is the session's, another anybody's (or the name rebinds after the hello): downloaders
  // would send their piece requests, grants included, wherever the name points when they resolve it.
  t.equal(await checkAdvertisedBase('http://multi.example:6379', '192.0.2.7', new BlockList(), { resolve }), 'http://192.0.2.7:6379', 'the session\'s own address');
  t.equal(await checkAdvertisedBase('https://six.example:65002', '::ffff:10.0.0.1', cidrs('2001:db8::/32'), { resolve }), 'https://[2001:db8::7]:65002', 'an allowed one, IPv6 in brackets');
  await t.rejects(checkAdvertisedBase('http://other.example:65002', '192.0.2.7', new BlockList(), { resolve }), { code: 'SN_BAD_ADVERTISE' }, 'a name with none of them is refused');
  t.equal(await checkAdvertisedBase('http://192.0.2.7:65002', '192.0.2.7', new BlockList(), { resolve }), 'http://192.0.2.7:65002', 'an address stays as given');
});

function cidrs(...list: string[]): BlockList {
  const b = new BlockList();
  for (const c of list) {
    const [net, bits] = c.split('/');
    b.addSubnet(net!, Number(bits), net!.includes(':') ? 'ipv6' : 'ipv4');
  }
  return b;
}

t.test('reports are evidence only about real assignments: forged blame, forged sources and random tasks change nothing', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(9 * MiB, 401);
  const { digest, url } = await pushBlob(reg.url, 'team/evidence', blob);
  const sn = await startSupernode(t, { sessionRate: 100_000 });
  const honest = await startDaemon(t, [sn.url]);
  const r = await getViaProxy(honest.proxyUrl, url);
  t.equal(sha(r.body), digest);
  const taskId = r.headers['x-damselfly-task-id'] as string;
  const honestId = honest.config.peerId;

  const liar = await rawPeer(sn.url, 'liar', TEST_SECRET);
  t.teardown(() => liar.close());
  t.equal(await errorCode(liar.call({ type: 'peer:hello', peerId: 'liar', version: PROTOCOL_VERSION })), 'OK');
  t.equal(await errorCode(liar.call({ type: 'pieces:want', taskId, want: [0], max: 1 })), 'SN_TASK_NOT_JOINED', 'no scheduling in a task it did not join');
  t.equal(await errorCode(liar.call({ type: 'task:register', url })), 'OK');
  // Blame with no assignment behind it: ignored.
  for (let n = 0; n < 3; n++) liar.send({ type: 'piece:result', taskId, piece: n, from: honestId, ok: false, reason: 'corrupt' });
  // A real assignment, reported about another source than the one assigned: ignored too.
  const sched = (await liar.call<WantResult>({ type: 'pieces:want', taskId, want: [0, 1, 2], max: 3 })) as { ok: true; result: WantResult };
  t.ok(sched.result.assignments.length > 0, 'the liar got assignments');
  for (const a of sched.result.assignments) liar.send({ type: 'piece:result', taskId, piece: a.piece, from: a.from === honestId ? 'supernode' : honestId, ok: false, reason: 'corrupt' });
  // Random task ids by the thousand: no state grows.
  for (let i = 0; i < 5_000; i++) liar.send({ type: 'piece:result', taskId: createHash('sha256').update(String(i)).digest('hex'), piece: i, ok: false, reason: 'corrupt' });
  await liar.call({ type: 'pieces:want', taskId: 'e'.repeat(64), want: [0], max: 1 });
  await new Promise((r) => setTimeout(r, 300));
  t.notOk(sn.scheduler.isBlacklisted(taskId, honestId), 'the honest peer is not blacklisted');
  t.equal(sn.scheduler.taskCount, 1, 'random task ids created no scheduler state');
  t.ok((await metricValue(sn.metrics.registry, 'damselfly_supernode_piece_reports_total', { verdict: 'no_assignment' })) >= 5_003, 'forged reports counted as such');
  t.ok((await metricValue(sn.metrics.registry, 'damselfly_supernode_piece_reports_total', { verdict: 'source_mismatch' })) >= 1, 'a report naming another source is ignored');
});

t.test('one session cannot flood the supernode: requests past its rate get SN_RATE_LIMITED, the supernode keeps serving', async (t) => {
  const sn = await startSupernode(t, { sessionRate: 50 });
  const p = await rawPeer(sn.url, 'flood', TEST_SECRET);
  t.teardown(() => p.close());
  t.equal(await errorCode(p.call({ type: 'peer:hello', peerId: 'flood', version: PROTOCOL_VERSION })), 'OK');
  const replies = await Promise.all(Array.from({ length: 400 }, () => errorCode(p.call({ type: 'pieces:want', taskId: 'f'.repeat(64), want: [0], max: 1 }))));
  const limited = replies.filter((c) => c === 'SN_RATE_LIMITED').length;
  t.ok(limited >= 250, `${limited} of 400 requests refused beyond the burst of 100`);
  const h = await request(`${sn.url}/healthy`);
  t.equal(h.statusCode, 200);
  await h.body.dump();
});

t.test('malformed frames by the thousand: held to the session’s rate, and a few log lines, not one each (real binary)', async (t) => {
  const sn = await spawnSupernodeProc(t, ['--session-rate', '50']);
  const p = await rawPeer(sn.url, 'garbage', TEST_SECRET);
  t.teardown(() => p.close());
  t.equal(await errorCode(p.call({ type: 'peer:hello', peerId: 'garbage', version: PROTOCOL_VERSION })), 'OK');
  for (let i = 0; i < 3_000; i++) p.ws.send(i % 2 ? '{}' : 'not json');
  // Asked after the flood, the supernode still answers (with the rate it is over, or at once once it refilled).
  await new Promise((r) => setTimeout(r, 300));
  const after = await errorCode(p.call({ type: 'pieces:want', taskId: 'f'.repeat(64), want: [0], max: 1 }));
  t.ok(after === 'SN_RATE_LIMITED' || after === 'SN_TASK_NOT_FOUND', `still answering (${after})`);
  const lines = sn.output().split('\n').filter((l) => l.includes('peer:bad-message'));
  t.ok(lines.length >= 1 && lines.length <= 3, `${lines.length} log lines for 3,000 bad frames`);
  const h = await request(`${sn.url}/healthy`);
  t.equal(h.statusCode, 200);
  await h.body.dump();
});

t.test('pieces only with a grant: upload servers and the supernode piece API refuse everyone else', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(5 * MiB, 402);
  const { url } = await pushBlob(reg.url, 'team/grants', blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const r = await getViaProxy(d.proxyUrl, url);
  const taskId = r.headers['x-damselfly-task-id'] as string;
  const get = async (u: string, headers: Record<string, string> = {}) => {
    const res = await request(u, { headers });
    const body = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, body };
  };
  const up = `${d.uploadUrl}/pieces/${taskId}/0`;
  const snPiece = `${sn.url}/api/v1/tasks/${taskId}/pieces/0`;
  t.equal((await get(up)).status, 403, 'upload server: no grant, no piece');
  t.equal((await get(snPiece)).status, 403, 'supernode: no grant, no piece');
  const other = issueGrant(Buffer.from(TEST_SECRET), { taskId, piece: 1, requester: 'x' });
  t.equal((await get(up, { [GRANT_HEADER]: other })).status, 403, 'a grant for another piece does not open this one');
  const expired = issueGrant(Buffer.from(TEST_SECRET), { taskId, piece: 0, requester: 'x' }, Date.now() - 10 * 60_000);
  t.equal((await get(up, { [GRANT_HEADER]: expired })).status, 403, 'an expired grant is refused');
  const forged = issueGrant(Buffer.from('some-other-secret-0123456789'), { taskId, piece: 0, requester: 'x' });
  t.equal((await get(up, { [GRANT_HEADER]: forged })).status, 403, 'a grant not signed with the cluster secret is refused');
  const good = await get(up, { [GRANT_HEADER]: issueGrant(Buffer.from(TEST_SECRET), { taskId, piece: 0, requester: 'x' }) });
  t.equal(good.status, 200);
  t.ok(good.body.equals(blob.subarray(0, pieceSizeFor(blob.length))), 'a valid grant gets the piece');
  t.ok((await metricValue(d.metrics.registry, 'damselfly_dfdaemon_upload_refused_total')) >= 4, 'refusals counted on the dfdaemon');
  // The operator REST API wants the operator token, derived from the cluster secret, and never shows a stored URL.
  const anon = await request(`${sn.url}/api/v1/tasks/${taskId}`);
  t.equal(anon.statusCode, 401);
  await anon.body.dump();
  // The secret itself is not a token: it never has to travel as a header, to a scraper or over plain HTTP.
  const raw = await request(`${sn.url}/api/v1/tasks/${taskId}`, { headers: { authorization: `Bearer ${TEST_SECRET}` } });
  t.equal(raw.statusCode, 401, 'the cluster secret as a bearer token is refused');
  await raw.body.dump();
  const dfctl = await promisify(execFile)(process.execPath, [join(ROOT, 'supernode/dist/dfctl.js'), 'token'], { env: { ...process.env, DAMSELFLY_CLUSTER_SECRET: TEST_SECRET } });
  t.equal(dfctl.stdout.trim(), OPERATOR_TOKEN, 'dfctl token prints the operator token');
  const metricsOnly = await promisify(execFile)(process.execPath, [join(ROOT, 'supernode/dist/dfctl.js'), 'token', '--metrics'], { env: { ...process.env, DAMSELFLY_CLUSTER_SECRET: TEST_SECRET } });
  t.equal(metricsOnly.stdout.trim(), METRICS_TOKEN, 'and with --metrics the metrics token');
  // The metrics token reads /metrics and nothing else: a scraper holding it cannot use the operator API.
  const asScraper = { authorization: `Bearer ${METRICS_TOKEN}` };
  const byScraper = await request(`${sn.url}/metrics`, { headers: asScraper });
  t.equal(byScraper.statusCode, 200, 'the metrics token reads /metrics');
  await byScraper.body.dump();
  for (const [method, path] of [['GET', `/api/v1/tasks/${taskId}`], ['POST', '/api/v1/preheat'], ['GET', '/api/v1/dashboard']] as const) {
    const r = await request(`${sn.url}${path}`, { method, headers: { ...asScraper, 'content-type': 'application/json' }, ...(method === 'POST' ? { body: JSON.stringify({ image: 'x' }) } : {}) });
    t.equal(r.statusCode, 401, `the metrics token cannot ${method} ${path}`);
    await r.body.dump();
  }
  const info = await request(`${sn.url}/api/v1/tasks/${taskId}`, { headers: bearer });
  const body = (await info.body.json()) as Record<string, unknown>;
  t.equal(info.statusCode, 200);
  t.notOk('url' in body || 'origin' in body, 'no URL in the answer');
  t.equal(body.verified, true, 'the supernode checked the whole blob against its digest');
  // Metrics (peer ids, task ids, rates) likewise, unless the operator opens them for a scraper without the token.
  const scrape = async (base: string, headers: Record<string, string> = {}) => {
    const r = await request(`${base}/metrics`, { headers });
    const text = await r.body.text();
    return { status: r.statusCode, text };
  };
  t.equal((await scrape(sn.url)).status, 401, '/metrics without the token: refused');
  const scraped = await scrape(sn.url, bearer);
  t.equal(scraped.status, 200);
  t.match(scraped.text, /damselfly_supernode_origin_bytes_total/);
  const open = await startSupernode(t, { metricsOpen: true });
  t.equal((await scrape(open.url)).status, 200, 'metricsOpen: served to anyone');
  t.equal((await request(`${open.url}/api/v1/dashboard`)).statusCode, 401, 'the rest of the API stays closed');
});

t.test('insiders serving garbage under many ids cannot fail an honest pull: after two bad peers a piece comes from the supernode', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  // Two pieces and twelve sybils: without the rule, a requester could be sent to many of them for one piece.
  const blob = makeBlob(2 * MiB, 403);
  const pieces = Math.ceil(blob.length / pieceSizeFor(blob.length));
  t.equal(pieces, 2);
  const { digest, url } = await pushBlob(reg.url, 'team/sybil', blob);
  const sn = await startSupernode(t);
  const seed = await startDaemon(t, [sn.url]);
  t.equal(sha((await getViaProxy(seed.proxyUrl, url)).body), digest);
  await seed.stop();
  const { startBadPeer } = await import('./helpers/bad-peer.js');
  const bad = await Promise.all(Array.from({ length: 12 }, (_, i) => startBadPeer(sn.url, url, TEST_SECRET, `sybil-${i}`)));
  t.teardown(() => Promise.all(bad.map((b) => b.close())));
  const honest = await Promise.all([0, 1].map(() => startDaemon(t, [sn.url], { parallelPieces: 4 })));
  // The seed's own pull went through the supernode's piece API: only what the honest pulls add counts.
  const before = await metricValue(sn.metrics.registry, 'damselfly_supernode_served_pieces_total');
  const results = await Promise.all(honest.map((d) => getViaProxy(d.proxyUrl, url)));
  for (const r of results) {
    t.equal(r.status, 200);
    t.equal(sha(r.body), digest, 'the honest pull completed with the right bytes');
  }
  const requests = bad.flatMap((b) => b.requests);
  t.ok(requests.length > 0, `the bad peers were tried (${requests.length} requests)`);
  // Per requester and piece: at most two bad sources (an endgame second source included), then the supernode.
  const perPair = new Map<string, number>();
  for (const r of requests) perPair.set(`${r.requester} #${r.piece}`, (perPair.get(`${r.requester} #${r.piece}`) ?? 0) + 1);
  const worst = Math.max(...perPair.values());
  t.ok(worst <= 2, `at most two bad sources per piece and requester (worst: ${worst}; ${JSON.stringify(Object.fromEntries(perPair))})`);
  t.ok((await metricValue(sn.metrics.registry, 'damselfly_supernode_served_pieces_total')) > before, 'the supernode stepped in for the honest pulls');
});

/**
 * Runs a daemon's real binary with no cluster secret in its environment (but `extra`), until it exits, or until its
 * output matches `waitFor` (then it is stopped).
 */
function run(bin: string, args: string[], waitFor?: RegExp, extra: Record<string, string> = {}): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return runCommand(process.execPath, [join(ROOT, bin), ...args], waitFor, extra);
}

/** As `run`, for any command (a shell that starts a binary with a process substitution). */
function runCommand(command: string, args: string[], waitFor?: RegExp, extra: Record<string, string> = {}): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env, DAMSELFLY_CLUSTER_SECRET: '', ...extra };
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.on('data', (d) => {
      stdout += d;
      if (waitFor?.test(stdout)) child.kill('SIGTERM');
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.on('close', (code) => (clearTimeout(timer), resolve({ code, stderr, stdout })));
  });
}

t.test('without a cluster secret the daemons refuse non-loopback addresses unless insecure is explicit (real binaries)', async (t) => {
  const dir = await tempDir(t);
  const sn = await run('supernode/dist/cli.js', ['--host', '0.0.0.0', '--port', '0', '--data-dir', join(dir, 'sn')]);
  t.equal(sn.code, 1);
  t.match(sn.stderr, /host: "0\.0\.0\.0" is reachable from other hosts, but no cluster secret is set/);
  const df = await run('dfdaemon/dist/cli.js', ['--upload-host', '0.0.0.0', '--proxy-port', '0', '--upload-port', '0', '--health-port', '0', '--data-dir', join(dir, 'df')]);
  t.equal(df.code, 1);
  t.match(df.stderr, /uploadHost: "0\.0\.0\.0" is reachable from other hosts/);
  // A /metrics listener on the network is one more: it would be open to all without a secret to derive the token.
  const metrics = await run('dfdaemon/dist/cli.js', ['--metrics-host', '0.0.0.0', '--upload-host', '127.0.0.1', '--proxy-port', '0', '--upload-port', '0', '--health-port', '0', '--data-dir', join(dir, 'df2')]);
  t.equal(metrics.code, 1);
  t.match(metrics.stderr, /metricsHost: "0\.0\.0\.0" is reachable from other hosts/);
  const short = await run('supernode/dist/cli.js', ['--host', '127.0.0.1', '--port', '0', '--data-dir', join(dir, 'sn2')], undefined, { DAMSELFLY_CLUSTER_SECRET: 'short' });
  t.equal(short.code, 1);
  t.match(short.stderr, /cluster secret: must be at least 16 characters/);
  // The secret is not a flag: a command line is visible to every local user.
  const flag = await run('supernode/dist/cli.js', ['--host', '127.0.0.1', '--port', '0', '--data-dir', join(dir, 'sn4'), '--cluster-secret', 'a-secret-on-the-command-line']);
  t.equal(flag.code, 1);
  t.match(flag.stderr, /unknown option '--cluster-secret'/);
  const inline = await run('supernode/dist/cli.js', ['--host', '127.0.0.1', '--port', '0', '--data-dir', join(dir, 'sn5'), '--cluster-secret=a-secret-on-the-command-line']);
  t.equal(inline.code, 1);
  t.match(inline.stderr, /unknown option '--cluster-secret=…'/);
  t.notOk(`${flag.stderr}${inline.stderr}`.includes('a-secret-on-the-command-line'), 'and the value is not echoed into the logs');
  const insecure = await run('supernode/dist/cli.js', ['--host', '0.0.0.0', '--port', String(await freePort()), '--data-dir', join(dir, 'sn3'), '--insecure', 'true'], /supernode:started/);
  t.match(insecure.stdout, /supernode:INSECURE/, 'insecure mode starts, and says so loudly');
  t.match(insecure.stdout, /supernode:started/);
});

t.test('trust files that give the cluster away are refused, naming the file: a secret or TLS key others may read, one (or the CA) others or another group may change, a CA another user owns, or no file (a pipe is read) (real binaries)', async (t) => {
  const dir = await tempDir(t);
  const secretFile = join(dir, 'cluster-secret');
  const secret = 'a-cluster-secret-nobody-else-reads';
  await writeFile(secretFile, secret);
  await chmod(secretFile, 0o644);
  const sn = await run('supernode/dist/cli.js', ['--host', '0.0.0.0', '--port', '0', '--data-dir', join(dir, 'sn')], undefined, { DAMSELFLY_CLUSTER_SECRET_FILE: secretFile });
  t.equal(sn.code, 1, 'the supernode does not start');
  t.match(sn.stderr, /clusterSecretFile: ".*cluster-secret" is readable by every local user \(mode 0644\).*chmod o-r/);
  t.notMatch(sn.stderr, /no cluster secret is set/, 'one error for one cause');
  t.notOk(`${sn.stderr}${sn.stdout}`.includes(secret), 'the secret is not echoed');
  const df = await run('dfdaemon/dist/cli.js', ['--proxy-port', '0', '--upload-port', '0', '--health-port', '0', '--data-dir', join(dir, 'df')], undefined, { DAMSELFLY_CLUSTER_SECRET_FILE: secretFile });
  t.equal(df.code, 1, 'nor does a dfdaemon');
  t.match(df.stderr, /clusterSecretFile: .* is readable by every local user/);
  // A TLS key is a member's identity as much: the same rule.
  const key = join(dir, 'node.key');
  await writeFile(key, 'not read: refused first');
  await chmod(key, 0o604);
  const tls = await run('dfdaemon/dist/cli.js', ['--proxy-port', '0', '--upload-port', '0', '--health-port', '0', '--data-dir', join(dir, 'df2')], undefined, { DAMSELFLY_TLS_CERT: key, DAMSELFLY_TLS_KEY: key });
  t.equal(tls.code, 1);
  t.match(tls.stderr, /tlsKey: .*node\.key" is readable by every local user \(mode 0604\)/);
  // Whoever may change it chooses the secret this node trusts (or, for the CA, adds their own): others may not write
  // it, nor may a group other than this user's own. Each problem is named, all at once.
  const ca = join(dir, 'ca.crt');
  await writeFile(ca, 'not read: refused first');
  await chmod(ca, 0o646);
  const writable = await run('dfdaemon/dist/cli.js', ['--proxy-port', '0', '--upload-port', '0', '--health-port', '0', '--data-dir', join(dir, 'df3')], undefined, { DAMSELFLY_CLUSTER_SECRET_FILE: secretFile, DAMSELFLY_TLS_CA: ca });
  t.equal(writable.code, 1);
  t.match(writable.stderr, /clusterSecretFile: .* is readable by every local user/);
  t.match(writable.stderr, /tlsCa: .*ca\.crt" may be changed by every local user \(mode 0646\).*add their own CA/);
  if (process.geteuid?.() === 0) {
    // Another group's members may write it: refused. This user's own group (a user private group under umask 002)
    // may: accepted, as Debian's ssh accepts it.
    await chmod(secretFile, 0o620);
    await chown(secretFile, 0, 65534);
    await chmod(ca, 0o644);
    await chown(ca, 65534, 0);
    const others = await run('supernode/dist/cli.js', ['--host', '127.0.0.1', '--port', '0', '--data-dir', join(dir, 'sn3')], undefined, { DAMSELFLY_CLUSTER_SECRET_FILE: secretFile, DAMSELFLY_TLS_CA: ca });
    t.equal(others.code, 1);
    t.match(others.stderr, /clusterSecretFile: .* may be changed by its group \(gid 65534\) \(mode 0620\), and whoever changes it chooses the secret/);
    // The CA's owner may add their own CA: it must be this user's or root's.
    t.match(others.stderr, /tlsCa: .*ca\.crt" is owned by uid 65534, neither this user \(uid 0\) nor root/);
    await chown(secretFile, 0, 0);
    const own = await run('supernode/dist/cli.js', ['--host', '127.0.0.1', '--port', String(await freePort()), '--data-dir', join(dir, 'sn5')], /supernode:started/, { DAMSELFLY_CLUSTER_SECRET_FILE: secretFile });
    t.match(own.stdout, /supernode:started/, 'group-writable by its own group: started');
  }
  // Not a file: refused, named. A pipe is read to its end, as a secret given by process substitution is.
  const notFile = await run('supernode/dist/cli.js', ['--host', '127.0.0.1', '--port', '0', '--data-dir', join(dir, 'sn4')], undefined, { DAMSELFLY_CLUSTER_SECRET_FILE: dir });
  t.equal(notFile.code, 1);
  t.match(notFile.stderr, /clusterSecretFile: .* is neither a regular file nor a pipe/);
  const port = await freePort();
  const piped = await runCommand('bash', ['-c', `exec "$0" "$1" --host 127.0.0.1 --port ${port} --data-dir "$2" --cluster-secret-file <(printf %s '${secret}')`, process.execPath, join(ROOT, 'supernode/dist/cli.js'), join(dir, 'sn6')], /supernode:started/);
  t.match(piped.stdout, /supernode:started/, `a secret through a pipe: started (${piped.stderr.trim()})`);
  // Its owner and group may read it, as the chart mounts it (0440 for the pod's fsGroup): the supernode starts.
  await chmod(secretFile, 0o440);
  const ok = await run('supernode/dist/cli.js', ['--host', '0.0.0.0', '--port', String(await freePort()), '--data-dir', join(dir, 'sn2')], /supernode:started/, { DAMSELFLY_CLUSTER_SECRET_FILE: secretFile });
  t.match(ok.stdout, /supernode:started/, 'mode 0440: started');
  t.notMatch(ok.stdout, /INSECURE/, 'with the secret');
});

t.test('SSRF: only allowed origins, never loopback/private/metadata addresses in any spelling, not even via a redirect', async (t) => {
  const dir = await tempDir(t);
  // A "secret" internal service on another loopback address; it must never be asked anything.
  let secretHits = 0;
  const internal = createServer((_req, res) => {
    secretHits++;
    res.writeHead(200, { 'content-length': 6 }).end('secret');
  });
  await new Promise<void>((r) => internal.listen(0, '127.0.0.2', () => r()));
  t.teardown(() => new Promise((r) => internal.close(r)));
  const port = (internal.address() as { port: number }).port;
  const redirector = createServer((_req, res) => res.writeHead(307, { location: `http://127.0.0.2:${port}/admin` }).end());
  await new Promise<void>((r) => redirector.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise((r) => redirector.close(r)));
  const redirectorUrl = `http://127.0.0.1:${(redirector.address() as { port: number }).port}`;

  // Anything is "allowed" by name; the address policy alone must stop these (loopback is not allowed here).
  const sn = await startSupernode(t, { allowedOrigins: ['*'], originAllowCidrs: [], dataDir: dir });
  const register = async (url: string) => {
    const res = await request(`${sn.url}/api/v1/tasks`, { method: 'POST', headers: { ...bearer, 'content-type': 'application/json' }, body: JSON.stringify({ url }) });
    const body = (await res.body.json()) as { code?: string };
    return { status: res.statusCode, code: body.code };
  };
  for (const host of [`127.0.0.2:${port}`, `0x7f000002:${port}`, `2130706434:${port}`, `[::ffff:127.0.0.2]:${port}`, `[::ffff:7f00:2]:${port}`, `localhost:${port}`, '169.254.169.254', '[::1]:1', '10.1.2.3', '192.168.1.1']) {
    const r = await register(`http://${host}/admin`);
    t.same(r, { status: 403, code: 'ADDRESS_FORBIDDEN' }, `http://${host}/ refused`);
  }
  // An allowed origin that redirects to an internal address: the hop is refused too.
  const sn2 = await startSupernode(t, { allowedOrigins: [redirectorUrl], originAllowCidrs: ['127.0.0.1/32'] });
  const viaRedirect = await request(`${sn2.url}/api/v1/tasks`, { method: 'POST', headers: { ...bearer, 'content-type': 'application/json' }, body: JSON.stringify({ url: `${redirectorUrl}/blob` }) });
  const vr = (await viaRedirect.body.json()) as { code?: string };
  t.equal(viaRedirect.statusCode, 403);
  t.equal(vr.code, 'ADDRESS_FORBIDDEN', 'a redirect to 127.0.0.2 is refused at connect time');
  const notListed = await request(`${sn2.url}/api/v1/tasks`, { method: 'POST', headers: { ...bearer, 'content-type': 'application/json' }, body: JSON.stringify({ url: `http://127.0.0.1:${port}/x` }) });
  t.equal(((await notListed.body.json()) as { code?: string }).code, 'SN_ORIGIN_FORBIDDEN', 'an origin not in allowedOrigins is refused by name');
  t.equal(secretHits, 0, 'the internal service was never contacted');

  // A dfdaemon whose supernode refuses an origin fetches it itself (its own client's request), counted.
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(2 * MiB, 404);
  const { digest, url } = await pushBlob(reg.url, 'team/ssrf', blob);
  const d = await startDaemon(t, [sn2.url]);
  t.equal(sha((await getViaProxy(d.proxyUrl, url)).body), digest);
  t.equal(await metricValue(d.metrics.registry, 'damselfly_dfdaemon_back_source_total', { why: 'origin_not_allowed' }), 1, 'counted as origin_not_allowed');
});

t.test('a requester’s headers cannot steer the origin request: no foreign Host, Range or conditionals on any path', async (t) => {
  // The origin records what each request carried. /plain honours Range; /norange honours it for the size probe only,
  // then answers whole (the fast path, then the full client, then the sequential fallback all ask it).
  const blob = makeBlob(MiB + 7, 407);
  const heard: { path: string; host?: string; ranges: string[]; conditional: boolean; client?: string }[] = [];
  const origin = createServer((req, res) => {
    const ranges = req.rawHeaders.filter((_, i) => i % 2 === 1 && req.rawHeaders[i - 1]!.toLowerCase() === 'range');
    heard.push({ path: req.url ?? '', host: req.headers.host, ranges, conditional: req.headers['if-none-match'] !== undefined, client: req.headers['x-client'] as string | undefined });
    const m = ranges.length === 1 ? /^bytes=(\d+)-(\d+)$/.exec(ranges[0]!) : null;
    const partial = m && (req.url === '/plain' || ranges[0] === `bytes=0-${BLOCK_SIZE - 1}`);
    if (!partial) return void res.writeHead(200, { 'content-length': blob.length }).end(blob);
    const [start, end] = [Number(m[1]), Math.min(Number(m[2]), blob.length - 1)];
    res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${blob.length}` }).end(blob.subarray(start, end + 1));
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (origin.closeAllConnections(), origin.close(() => r()))));
  const host = `127.0.0.1:${(origin.address() as { port: number }).port}`;
  const headers = { Host: 'internal.vhost', Range: 'bytes=5-9', 'If-None-Match': '*', 'X-Client': 'kept' };

  const sn = await startSupernode(t);
  const p = await rawPeer(sn.url, 'node-h', TEST_SECRET);
  t.teardown(() => p.close());
  t.equal(await errorCode(p.call({ type: 'peer:hello', peerId: 'node-h', version: PROTOCOL_VERSION })), 'OK');
  for (const path of ['/plain', '/norange']) {
    const r = (await p.call<TaskInfo>({ type: 'task:register', url: `http://${host}${path}`, headers })) as { ok: boolean; result?: TaskInfo };
    t.ok(r.ok, `${path}: registered`);
    if (!r.ok) continue;
    const { taskId } = r.result!;
    t.equal(await errorCode(p.call({ type: 'pieces:want', taskId, want: [0, 1], max: 2, readers: [{ piece: 0, block: 0 }, { piece: 1, block: 0 }] })), 'OK');
    for (let i = 0; i < 300 && !(sn.store.pieceSha(taskId, 0) && sn.store.pieceSha(taskId, 1)); i++) await new Promise((r) => setTimeout(r, 10));
    t.ok(sn.store.pieceSha(taskId, 0) && sn.store.pieceSha(taskId, 1), `${path}: both pieces seeded`);
  }
  // The access check a dfdaemon makes with its client's headers.
  const agent = new Agent();
  t.teardown(() => agent.close());
  t.equal((await checkOriginAccess({ url: new URL(`http://${host}/plain`), headers, dispatcher: agent })).ok, true, 'the access check got its answer');

  t.ok(heard.some((h) => h.path === '/norange' && h.ranges.length === 0), 'the sequential fallback was asked too');
  t.same(heard.filter((h) => h.host !== host).map((h) => `${h.path}: ${h.host}`), [], 'every request named the URL’s own host');
  t.same(heard.filter((h) => h.ranges.length > 1 || h.ranges.includes('bytes=5-9')).map((h) => `${h.path}: ${h.ranges.join(' | ')}`), [], 'no request carried the requester’s Range');
  t.equal(heard.filter((h) => h.conditional).length, 0, 'nor its If-None-Match');
  // X-Client may be a credential (any header not known to be plain counts as one), so each task is also asked about
  // anonymously, once, without any of the requester's headers.
  t.same(heard.filter((h) => h.client !== 'kept').map((h) => h.ranges.join()), ['bytes=0-0', 'bytes=0-0'], `its own end-to-end header went with every one of the ${heard.length} requests but each task's anonymous check`);
});

t.test('no secrets at rest: userinfo, signature and token parameters never reach either store, nor any answer', async (t) => {
  const blob = makeBlob(3 * MiB, 405);
  const file = await serveFile(t, blob);
  const signed = file.replace('http://', 'http://alice:pa55w0rd-at-rest@') + '?X-Amz-Credential=CREDSECRET&X-Amz-Signature=SIGSECRET&sig=AZSASSECRET&private_token=glpat-TOKENSECRET&v=1';
  const secrets = ['pa55w0rd', 'SIGSECRET', 'CREDSECRET', 'AZSASSECRET', 'TOKENSECRET'];
  const snDir = await tempDir(t);
  const dfDir = await tempDir(t);
  const sn = await startSupernode(t, { dataDir: snDir });
  const res = await request(`${sn.url}/api/v1/tasks`, { method: 'POST', headers: { ...bearer, 'content-type': 'application/json' }, body: JSON.stringify({ url: signed }) });
  const text = await res.body.text();
  t.equal(res.statusCode, 200, text);
  const d = await startDaemon(t, [sn.url], { dataDir: dfDir });
  const got = await getViaProxy(d.proxyUrl, signed);
  t.equal(got.status, 200);
  t.equal(sha(got.body), sha(blob));
  for (const s of secrets) t.notOk(text.includes(s), `REST answer has no ${s}`);
  const dash = await (await request(`${sn.url}/api/v1/dashboard`, { headers: bearer })).body.text();
  t.ok(dash.includes('private_token=redacted'), 'the dashboard shows which credential the URL carried');
  for (const s of secrets) t.notOk(dash.includes(s), `the dashboard has no ${s}`);
  await d.stop();
  await sn.stop();
  const scan = async (dir: string): Promise<string[]> => {
    const hits: string[] = [];
    for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
      if (!e.isFile()) continue;
      const path = join(e.parentPath, e.name);
      const data = await readFile(path);
      for (const s of [...secrets, Buffer.from('alice:pa55w0rd-at-rest').toString('base64')]) if (data.includes(s)) hits.push(`${path}: ${s}`);
    }
    return hits;
  };
  t.same(await scan(snDir), [], 'nothing in the supernode data dir');
  t.same(await scan(dfDir), [], 'nothing in the dfdaemon data dir');
});

t.test('per-session task limit', async (t) => {
  const blob = makeBlob(1024, 406);
  const sn = await startSupernode(t, { sessionMaxTasks: 2 });
  const files = await Promise.all([0, 1, 2].map((i) => serveFile(t, blob, `/f${i}`)));
  const p: RawPeer = await rawPeer(sn.url, 'greedy', TEST_SECRET);
  t.teardown(() => p.close());
  t.equal(await errorCode(p.call({ type: 'peer:hello', peerId: 'greedy', version: PROTOCOL_VERSION })), 'OK');
  t.equal(await errorCode(p.call<TaskInfo>({ type: 'task:register', url: files[0] })), 'OK');
  t.equal(await errorCode(p.call<TaskInfo>({ type: 'task:register', url: files[1] })), 'OK');
  t.equal(await errorCode(p.call<TaskInfo>({ type: 'task:register', url: files[2] })), 'SN_TOO_MANY_TASKS');
});
