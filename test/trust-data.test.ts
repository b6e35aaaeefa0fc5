/**
 * What the trust boundary promises about bytes: a private blob reaches only clients the registry would give it to,
 * origin credentials serve only their owner, and bytes under a digest are that digest's bytes (or an error).
 * Real registry (htpasswd), real supernode and dfdaemons.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { chmod, chown, mkdir, open, readFile, readdir, stat } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { createServer } from 'node:http';
import bcrypt from 'bcryptjs';
import { request } from 'undici';
import { BLOCK_SIZE, GRANT_HEADER, PROTOCOL_VERSION, pieceSizeFor, taskIdFor, type WantResult, type TaskInfo } from '@damselfly/shared';
import { LocalStore } from '@damselfly/peer';
import { Readable } from 'node:stream';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { OPERATOR_TOKEN, TEST_SECRET, getViaProxy, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { metricValue } from './helpers/metrics.js';
import { rawPeer } from './helpers/ws-peer.js';
import { serveFile, shapedOrigin } from './helpers/file-server.js';
import { dfget } from './helpers/dfget.js';
import { spawnDaemonProc } from './helpers/procs.js';
import { until } from './helpers/until.js';

const MiB = 1024 * 1024;
/** Whether a command can be run as another local user (nobody): root, with setpriv. */
const asNobody = process.getuid?.() === 0 && !spawnSync('setpriv', ['--version']).error;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
const bearer = { authorization: `Bearer ${OPERATOR_TOKEN}` };

t.test('private blobs stay private: every client proves its own access at the registry; P2P and one origin read still', async (t) => {
  const htpasswd = `alice:${bcrypt.hashSync('alice-pass', 6)}\nbob:${bcrypt.hashSync('bob-pass', 6)}\n`;
  const reg = await startRegistry({ htpasswd });
  t.teardown(() => reg.stop());
  const alice = { authorization: basic('alice', 'alice-pass') };
  const bob = { authorization: basic('bob', 'bob-pass') };
  const blob = makeBlob(12 * MiB + 7, 501);
  const { digest } = await pushBlob(reg.url, 'private/app', blob, alice);
  const path = `/v2/private/app/blobs/${digest}`;
  const sn = await startSupernode(t);
  const dirs = [await tempDir(t), await tempDir(t)];
  const [a, b] = await Promise.all(dirs.map((dataDir) => startDaemon(t, [sn.url], { registries: [reg.url], proxyHosts: [], dataDir })));
  const heads = () => reg.access.filter((l) => l.method === 'HEAD' && l.path.includes(digest)).length;

  const t0 = performance.now();
  const first = await getViaProxy(a!.proxyUrl, path, alice);
  const firstMs = performance.now() - t0;
  t.equal(first.status, 200);
  t.equal(sha(first.body), digest, 'alice gets her blob through the mirror');
  const taskId = first.headers['x-damselfly-task-id'] as string;
  const info = (await (await request(`${sn.url}/api/v1/tasks/${taskId}`, { headers: bearer })).body.json()) as { public: boolean };
  t.equal(info.public, false, 'the supernode found the blob is not anonymous-readable');
  t.equal(a!.store.get(taskId)?.info.accessChecked, undefined, "the probe's word on alice's headers is not kept with the task");
  const headsAfterFirst = heads();

  const t1 = performance.now();
  const again = await getViaProxy(a!.proxyUrl, path, alice);
  const againMs = performance.now() - t1;
  t.equal(sha(again.body), digest);
  t.equal(heads(), headsAfterFirst, 'a repeat within the access TTL costs the registry nothing');

  // Everyone else: the registry's own answer, challenge included, whatever the node already holds.
  for (const [name, proxy, headers] of [
    ['no credentials, cached node', a!.proxyUrl, {}],
    ['wrong password, cached node', a!.proxyUrl, { authorization: basic('alice', 'nope') }],
    ['no credentials, other node', b!.proxyUrl, {}],
    ['Range, no credentials, cached node', a!.proxyUrl, { range: 'bytes=0-1023' }],
    ['Range, wrong user, other node', b!.proxyUrl, { range: 'bytes=5000000-5001023', authorization: basic('mallory', 'x') }],
  ] as const) {
    const r = await getViaProxy(proxy, path, headers);
    t.equal(r.status, 401, `${name}: 401`);
    t.match(String(r.headers['www-authenticate']), /Basic realm="damselfly-test"/, `${name}: the registry's challenge`);
    // Where a Range read would have started: a leak of that range would not hold the blob's first bytes.
    const at = Number(/bytes=(\d+)-/.exec((headers as { range?: string }).range ?? '')?.[1] ?? 0);
    t.notOk(r.body.includes(blob.subarray(at, at + 64)), `${name}: not a byte of the blob`);
  }

  // Bob is a registry user too: his own credentials open it, and his node fetches it P2P.
  const viaB = await getViaProxy(b!.proxyUrl, path, bob);
  t.equal(sha(viaB.body), digest, 'bob gets it with his own credentials');
  const range = await getViaProxy(b!.proxyUrl, path, { ...bob, range: 'bytes=100-199' });
  t.equal(range.status, 206);
  t.ok(range.body.equals(blob.subarray(100, 200)));
  const peerBytes = await metricValue(b!.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'peer' });
  t.ok(peerBytes > 0, `bob's node fetched from alice's node (${peerBytes} bytes)`);
  const served = await reg.settledBytesServed(digest);
  t.ok(served <= blob.length + 1024, `the registry served the blob about once for two users on two nodes (${served} bytes)`);

  const checks = await metricValue(a!.metrics.registry, 'damselfly_dfdaemon_access_checks_total');
  const originRequests =
    (await metricValue(a!.metrics.registry, 'damselfly_dfdaemon_access_check_origin_requests_total')) +
    (await metricValue(b!.metrics.registry, 'damselfly_dfdaemon_access_check_origin_requests_total'));
  t.ok(checks >= 4, 'every client request was checked');
  t.comment(
    `authorisation cost: ${headsAfterFirst} HEAD at the registry for alice's first pull (${firstMs.toFixed(0)} ms), 0 for her repeat (${againMs.toFixed(0)} ms); ` +
      `${originRequests} origin requests for all ${checks + (await metricValue(b!.metrics.registry, 'damselfly_dfdaemon_access_checks_total'))} checks on both nodes`,
  );
  // The HEAD is the supernode's anonymous check (is the blob public?). Alice's own access was shown by the supernode's
  // size probe, made with her headers when her pull created the task: her node asks nothing more for her.
  t.equal(headsAfterFirst, 1, "alice's first pull: one HEAD, the supernode's anonymous check");

  // Nothing of either password on disk.
  for (const dir of dirs) {
    for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
      if (!e.isFile()) continue;
      const data = await readFile(join(e.parentPath, e.name));
      for (const s of ['alice-pass', 'bob-pass', alice.authorization.slice(6), bob.authorization.slice(6)]) t.notOk(data.includes(s), `${e.name} holds no credential`);
    }
  }
});

t.test('origin credentials serve only their owner: another member registering with bad ones neither borrows nor breaks hers', async (t) => {
  const reg = await startRegistry({ htpasswd: `alice:${bcrypt.hashSync('alice-pass', 6)}\n` });
  t.teardown(() => reg.stop());
  const alice = { authorization: basic('alice', 'alice-pass') };
  const blob = makeBlob(10 * MiB, 502);
  const { digest, url } = await pushBlob(reg.url, 'private/lib', blob, alice);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url], { registries: [reg.url] });
  // Alice reads one range: only the piece covering it is seeded (with her credentials).
  const head = await getViaProxy(d.proxyUrl, url, { ...alice, range: 'bytes=0-99' });
  t.equal(head.status, 206);
  const taskId = taskIdFor(new URL(url));

  const insider = await rawPeer(sn.url, 'insider', TEST_SECRET);
  t.teardown(() => insider.close());
  t.ok((await insider.call({ type: 'peer:hello', peerId: 'insider', version: PROTOCOL_VERSION })).ok);
  const reply = (await insider.call<TaskInfo>({ type: 'task:register', url, headers: { authorization: basic('alice', 'guess') } })) as { ok: true; result: TaskInfo };
  t.equal(reply.result.taskId, taskId);
  const sched = (await insider.call<WantResult>({ type: 'pieces:want', taskId, want: [2], max: 1 })) as { ok: true; result: WantResult };
  const a = sched.result.assignments[0]!;
  t.equal(a.from, 'supernode', 'piece 2 is not seeded yet: the supernode must fetch it');
  const res = await request(`${sn.url}/api/v1/tasks/${taskId}/pieces/2`, { headers: { [GRANT_HEADER]: a.grant! } });
  const body = (await res.body.json()) as { code: string };
  t.equal(res.statusCode, 401, "the supernode fetched with the insider's own (wrong) credentials, not alice's");
  t.equal(body.code, 'ORIGIN_AUTH');

  const whole = await getViaProxy(d.proxyUrl, url, alice);
  t.equal(whole.status, 200);
  t.equal(sha(whole.body), digest, "alice's pull is untouched by the insider's registration");

  // Credentials are held only while used: unused ones expire, and a peer that still needs the supernode to fetch
  // for it simply hands its own over again.
  const blob2 = makeBlob(10 * MiB, 505);
  const second = await pushBlob(reg.url, 'private/lib', blob2, alice);
  const r0 = await getViaProxy(d.proxyUrl, second.url, { ...alice, range: 'bytes=0-9' });
  t.ok(r0.body.equals(blob2.subarray(0, 10)));
  t.ok(sn.seeder.heldCredentials >= 1, 'the supernode holds alice\'s credentials while she downloads');
  sn.seeder.sweep(Date.now() + 60 * 60_000);
  t.equal(sn.seeder.heldCredentials, 0, 'an hour unused: gone');
  const r2 = await getViaProxy(d.proxyUrl, second.url, { ...alice, range: `bytes=${9 * MiB}-${9 * MiB + 9}` });
  t.equal(r2.status, 206);
  t.ok(r2.body.equals(blob2.subarray(9 * MiB, 9 * MiB + 10)), 'the next piece is seeded after the peer re-registered');
});

t.test('a private blob’s first registration asks the origin for its size and whether it is public at once, not one after the other', async (t) => {
  // An HTTP origin with basic auth that answers nothing until two requests are in flight (or 3 s have passed, so the
  // old one-after-the-other order shows as a failure, not a hang).
  const body = makeBlob(64 * 1024, 31);
  const held: (() => void)[] = [];
  let inFlight = 0;
  let most = 0;
  const seen: string[] = [];
  const origin = createServer((req, res) => {
    const authed = req.headers.authorization === `Basic ${Buffer.from('bob:pw').toString('base64')}`;
    seen.push(`${req.method} ${authed ? 'with' : 'without'} credentials`);
    inFlight++;
    most = Math.max(most, inFlight);
    const answer = () => {
      inFlight--;
      if (!authed) return void res.writeHead(401, { 'www-authenticate': 'Basic realm="x"' }).end();
      const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
      const [a, b] = m ? [Number(m[1]), Math.min(Number(m[2]), body.length - 1)] : [0, body.length - 1];
      res.writeHead(m ? 206 : 200, { 'content-length': b - a + 1, ...(m ? { 'content-range': `bytes ${a}-${b}/${body.length}` } : {}), 'accept-ranges': 'bytes' });
      res.end(req.method === 'HEAD' ? undefined : body.subarray(a, b + 1));
    };
    held.push(answer);
    if (held.length >= 2) for (const f of held.splice(0)) f();
    else setTimeout(() => held.includes(answer) && held.splice(held.indexOf(answer), 1) && answer(), 3000);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => origin.close(() => r())));
  const url = `http://127.0.0.1:${(origin.address() as { port: number }).port}/private/blob.bin`;
  const sn = await startSupernode(t);
  const p = await rawPeer(sn.url, 'bob-node', TEST_SECRET);
  t.teardown(() => p.close());
  t.ok((await p.call({ type: 'peer:hello', peerId: 'bob-node', version: PROTOCOL_VERSION })).ok);
  const r = (await p.call<TaskInfo>({ type: 'task:register', url, headers: { authorization: `Basic ${Buffer.from('bob:pw').toString('base64')}` } })) as { ok: boolean; result?: TaskInfo };
  t.ok(r.ok, 'registered');
  t.equal(r.result?.contentLength, body.length, 'the size, from the probe');
  t.equal(r.result?.public, false, 'private: the anonymous request was refused');
  t.equal(seen.length, 2, 'two origin requests: the probe with her credentials, the check without');
  t.equal(most, 2, 'both were in flight at once');
  t.equal(r.result?.accessChecked, true, 'the reply says the origin gave the blob to these very headers');
  const again = (await p.call<TaskInfo>({ type: 'task:register', url, headers: { authorization: `Basic ${Buffer.from('eve:guess').toString('base64')}` } })) as { ok: boolean; result?: TaskInfo };
  t.ok(again.ok, 'a known task registers without the origin');
  t.equal(again.result?.accessChecked, undefined, 'and says nothing of headers the origin never saw');
  t.equal(seen.length, 2, 'no origin request for it');
});

t.test('an API key in a header of the origin’s own is a credential: the blob is private, and each client shows its own', async (t) => {
  // An origin that takes an API key header (as GitLab's Private-Token or Artifactory's X-JFrog-Art-Api), not
  // Authorization: only the key `k-alice` reads the object.
  const body = makeBlob(3 * MiB + 11, 33);
  const seen: string[] = [];
  const origin = createServer((req, res) => {
    const key = req.headers['x-api-key'];
    seen.push(`${req.method} ${key ?? 'no key'}`);
    if (key !== 'k-alice') return void res.writeHead(401, { 'content-type': 'text/plain' }).end('key required\n');
    const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '');
    const a = m ? Number(m[1]) : 0;
    const b = m && m[2] ? Math.min(Number(m[2]), body.length - 1) : body.length - 1;
    res.writeHead(m ? 206 : 200, { 'content-length': b - a + 1, ...(m ? { 'content-range': `bytes ${a}-${b}/${body.length}` } : {}), 'accept-ranges': 'bytes' });
    res.end(req.method === 'HEAD' ? undefined : body.subarray(a, b + 1));
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => origin.close(() => r())));
  const url = `http://127.0.0.1:${(origin.address() as { port: number }).port}/files/app.tar`;
  const sn = await startSupernode(t);
  const [a, b] = await Promise.all([startDaemon(t, [sn.url]), startDaemon(t, [sn.url])]);

  const first = await getViaProxy(a!.proxyUrl, url, { 'x-api-key': 'k-alice' });
  t.equal(first.status, 200);
  t.ok(first.body.equals(body), 'alice gets the file with her key');
  const taskId = first.headers['x-damselfly-task-id'] as string;
  const info = (await (await request(`${sn.url}/api/v1/tasks/${taskId}`, { headers: bearer })).body.json()) as { public: boolean };
  t.equal(info.public, false, 'the supernode asked the origin without the key, and it said no');
  for (const [name, proxy, headers] of [
    ['no key, cached node', a!.proxyUrl, {}],
    ['wrong key, cached node', a!.proxyUrl, { 'x-api-key': 'k-mallory' }],
    ['no key, other node', b!.proxyUrl, {}],
    ['Range, wrong key, other node', b!.proxyUrl, { 'x-api-key': 'k-mallory', range: 'bytes=1000-2023' }],
  ] as const) {
    const r = await getViaProxy(proxy, url, headers);
    t.equal(r.status, 401, `${name}: the origin's own refusal`);
    const at = Number(/bytes=(\d+)-/.exec((headers as { range?: string }).range ?? '')?.[1] ?? 0);
    t.notOk(r.body.includes(body.subarray(at, at + 64)), `${name}: not a byte of the file`);
  }
  const other = await getViaProxy(b!.proxyUrl, url, { 'x-api-key': 'k-alice' });
  t.ok(other.body.equals(body), 'the key holder on another node gets it');
  t.ok(seen.some((l) => l.endsWith('no key')), 'the origin was asked anonymously');
});

t.test('a registration that joins one under way is not told its headers were checked: the probe was made with the other’s', async (t) => {
  const body = makeBlob(64 * 1024, 32);
  const held: (() => void)[] = [];
  const seen: string[] = [];
  const origin = createServer((req, res) => {
    const auth = req.headers.authorization ?? 'none';
    seen.push(auth);
    held.push(() => {
      if (auth === 'none') return void res.writeHead(401).end();
      const end = Math.min(Number(/bytes=0-(\d+)/.exec(req.headers.range ?? '')?.[1] ?? 0), body.length - 1);
      res.writeHead(206, { 'content-length': end + 1, 'content-range': `bytes 0-${end}/${body.length}`, 'accept-ranges': 'bytes' });
      res.end(body.subarray(0, end + 1));
    });
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => origin.close(() => r())));
  const url = `http://127.0.0.1:${(origin.address() as { port: number }).port}/private/shared.bin`;
  const sn = await startSupernode(t);
  const [p1, p2] = await Promise.all([rawPeer(sn.url, 'n1', TEST_SECRET), rawPeer(sn.url, 'n2', TEST_SECRET)]);
  t.teardown(() => (p1.close(), p2.close()));
  for (const [p, id] of [[p1, 'n1'], [p2, 'n2']] as const) t.ok((await p.call({ type: 'peer:hello', peerId: id, version: PROTOCOL_VERSION })).ok);
  const first = p1.call<TaskInfo>({ type: 'task:register', url, headers: { authorization: 'Bearer first' } });
  for (let i = 0; i < 200 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  t.same(seen.sort(), ['Bearer first', 'none'], 'the first registration is at the origin: its probe and the anonymous check');
  const second = p2.call<TaskInfo>({ type: 'task:register', url, headers: { authorization: 'Bearer second' } });
  await new Promise((r) => setTimeout(r, 100));
  for (const f of held.splice(0)) f();
  const [a, b] = (await Promise.all([first, second])) as { ok: boolean; result?: TaskInfo }[];
  t.ok(a!.ok && b!.ok, 'both registered, one task');
  t.equal(a!.result?.accessChecked, true, 'the first: its headers were the probe’s');
  t.equal(b!.result?.accessChecked, undefined, 'the second: its headers never reached the origin');
  t.equal(seen.length, 2, 'the second registration cost the origin nothing');
});

t.test('a cached read waiting on its access check holds the task: GC running meanwhile does not take it, Range or not', async (t) => {
  const body = makeBlob(2 * MiB + 3, 37);
  let slow = 0;
  /** Lets the held access check answer. */
  let answer = () => {};
  const origin = (name: string) =>
    shapedOrigin(
      t,
      body,
      async (_i, _range, res) => {
        if (res.req.headers['x-api-key'] !== 'k') {
          res.writeHead(401).end();
          return true;
        }
        // A client whose access check the origin holds until the test has run GC.
        if (res.req.headers['x-slow'] === '1') {
          slow++;
          await new Promise<void>((r) => (answer = r));
        }
      },
      `/files/${name}`,
    );
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url], { taskTtlSeconds: 60 });
  // A Range read (served by the cache path) and a rangeless one (by the download path, the task already complete).
  for (const [name, range] of [['kept.bin', 'bytes=1000-2999'], ['kept-whole.bin', undefined]] as const) {
    const { url } = await origin(name);
    const first = await getViaProxy(d.proxyUrl, url, { 'x-api-key': 'k' });
    t.ok(first.body.equals(body), `${name}: cached by a first pull`);
    const taskId = first.headers['x-damselfly-task-id'] as string;
    // Its download run lingers 2 s for more readers (holding the task); once it has let go, only readers hold it.
    await until(`${name}: the first run ended`, () => !d.peer.running(taskId), 10_000);
    slow = 0;
    const reading = getViaProxy(d.proxyUrl, url, { 'x-api-key': 'k', 'x-slow': '1', ...(range ? { range } : {}) }).catch((err: Error) => ({ status: 0, body: Buffer.from(err.message) }));
    await until(`${name}: the read at its access check`, () => slow > 0);
    t.equal(slow, 1, `${name}: the read is at its access check`);
    const gc = await d.gc(Date.now() + 3_600_000);
    t.notOk(gc.evicted.some((e) => e.taskId === taskId), `${name}: GC, past the TTL, leaves the task being read`);
    t.ok(d.store.get(taskId), `${name}: it is still cached`);
    answer();
    const r = await reading;
    t.equal(r.status, range ? 206 : 200);
    t.ok(r.body.equals(range ? body.subarray(1000, 3000) : body), `${name}: and the read gets its bytes`);
  }
});

/** An origin serving `body` at `path` only to the API key `k` (403 to anyone else). */
async function keyedOrigin(t: Parameters<typeof shapedOrigin>[0], body: Buffer, path: string): Promise<string> {
  const { url } = await shapedOrigin(
    t,
    body,
    (_i, _range, res) => {
      if (res.req.headers['x-api-key'] === 'k') return;
      res.writeHead(403).end();
      return true;
    },
    path,
  );
  return url;
}

/** Makes byte `at` of a data file holding `body` wrong, as a bad disk would. */
async function flipByte(path: string, body: Buffer, at: number): Promise<void> {
  const fh = await open(path, 'r+');
  await fh.write(Buffer.from([body[at]! ^ 0xff]), 0, 1, at);
  await fh.close();
}

t.test('a client the origin refuses does not make a restarted dfdaemon re-check the pieces it kept of a private blob', async (t) => {
  const body = makeBlob(3 * MiB + 1, 41);
  const url = await keyedOrigin(t, body, '/private/partial.bin');
  const sn = await startSupernode(t);
  const dataDir = await tempDir(t, 'damselfly-df-');
  const d1 = await startDaemon(t, [sn.url], { dataDir });
  const part = await getViaProxy(d1.proxyUrl, url, { 'x-api-key': 'k', range: 'bytes=0-99' });
  t.equal(part.status, 206);
  const taskId = part.headers['x-damselfly-task-id'] as string;
  // The Range run lingers, then ends with piece 0 only.
  await until('the Range run ended', () => !d1.peer.running(taskId), 10_000);
  const partial = d1.store.get(taskId)!;
  t.ok(partial.has(0) && !partial.complete, 'piece 0 kept, the blob not whole');
  const dataPath = partial.dataPath;
  await d1.stop();
  // Left on disk; a restart re-checks kept pieces before a run builds on them (here one would find this byte wrong).
  await flipByte(dataPath, body, 10);
  const d2 = await startDaemon(t, [sn.url], { dataDir });
  const refused = await getViaProxy(d2.proxyUrl, url, { 'x-api-key': 'wrong' });
  t.equal(refused.status, 403, 'a client the origin refuses gets its refusal');
  t.ok(d2.store.get(taskId)?.has(0), 'and the kept piece was not read for it (its re-check would have dropped it)');
  const ok = await getViaProxy(d2.proxyUrl, url, { 'x-api-key': 'k' });
  t.ok(ok.body.equals(body), 'a client the origin accepts gets the blob: the bad piece is caught and fetched again');
});

t.test('a Range read of a cached private blob whose kept piece fails its re-check asks the origin for the client\'s access once', async (t) => {
  const body = makeBlob(3 * MiB + 1, 43);
  const url = await keyedOrigin(t, body, '/private/recheck.bin');
  const sn = await startSupernode(t);
  const dataDir = await tempDir(t, 'damselfly-df-');
  const d1 = await startDaemon(t, [sn.url], { dataDir });
  const whole = await getViaProxy(d1.proxyUrl, url, { 'x-api-key': 'k' });
  t.ok(whole.body.equals(body), 'cached whole');
  const taskId = whole.headers['x-damselfly-task-id'] as string;
  const dataPath = d1.store.get(taskId)!.dataPath;
  await d1.stop();
  await flipByte(dataPath, body, 10);
  // Access answers not remembered: every check is an origin request, so a second one for the same read would show.
  const d2 = await startDaemon(t, [sn.url], { dataDir, accessCacheSeconds: 0 });
  const checks = () => metricValue(d2.metrics.registry, 'damselfly_dfdaemon_access_checks_total', { result: 'ok' });
  const r = await getViaProxy(d2.proxyUrl, url, { 'x-api-key': 'k', range: 'bytes=0-99' });
  t.equal(r.status, 206);
  t.ok(r.body.equals(body.subarray(0, 100)), 'the bad piece was caught on its re-check and fetched again');
  t.equal(await checks(), 1, 'the client\'s access was asked once, not again when the cached path gave way to a download');
});

t.test('a cached blob whose blocks all matched but whose digest was never checked is not served whole from the cache', async (t) => {
  // What a node holds after it stopped between a blob's last block and its digest check (or while the check runs),
  // here with bytes that are not the digest's: every block matches the hash it was fetched against.
  const wrong = makeBlob(600 * 1024, 72);
  const digest = `sha256:${createHash('sha256').update('the real blob').digest('hex')}`;
  const url = await serveFile(t, wrong, '/claimed.bin');
  const taskId = taskIdFor(new URL(url), digest);
  const dataDir = await tempDir(t, 'damselfly-df-');
  const store = new LocalStore(dataDir);
  await store.start();
  const pieceSize = pieceSizeFor(wrong.length);
  const task = await store.open({ taskId, contentLength: wrong.length, pieceSize, pieceCount: 1, digest, public: true }, url);
  const blocks: string[] = [];
  for (let o = 0; o < wrong.length; o += BLOCK_SIZE) blocks.push(createHash('sha256').update(wrong.subarray(o, o + BLOCK_SIZE)).digest('hex'));
  await task.writePiece(0, Readable.from([wrong]), { expected: blocks });
  t.same([task.missing().length, task.complete], [0, false], 'every piece here, the blob not checked');
  await store.stop();

  const d = await startDaemon(t, [], { dataDir });
  for (const range of ['bytes=0-', `bytes=0-${wrong.length - 1}`]) {
    const r = await getViaProxy(d.proxyUrl, url, { 'x-damselfly-digest': digest, range }).catch(() => ({ status: 0, body: Buffer.alloc(0), headers: {} }));
    // An error status, or a transfer the client saw cut: never an answer that ends cleanly with the whole body.
    t.ok(r.status === 0 || r.status >= 400, `${range}: no complete-looking body (status ${r.status}, ${r.body.length} bytes)`);
  }
  for (let i = 0; i < 100 && d.store.get(taskId); i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(d.store.get(taskId), undefined, 'once found out, the bytes are not kept');
});

t.test('an origin redirecting to object storage: the client\'s credentials, API key headers included, stay with the origin', async (t) => {
  const body = makeBlob(3 * MiB + 11, 39);
  const storageSaw: Record<string, string | undefined>[] = [];
  const originSaw: (string | undefined)[] = [];
  // The object store: any request for the object gets it (a signed URL would carry its own authority).
  const storage = await shapedOrigin(
    t,
    body,
    (_i, _range, res) => {
      const h = res.req.headers;
      storageSaw.push({ authorization: h.authorization, 'private-token': h['private-token'] as string, 'x-api-key': h['x-api-key'] as string, range: h.range });
    },
    '/bucket/obj',
  );
  // The origin checks the key and sends every read to the object store, at another origin (localhost, not 127.0.0.1).
  const origin = createServer((req, res) => {
    originSaw.push(req.headers['private-token'] as string | undefined);
    if (req.headers['private-token'] !== 'glpat-secret') return void res.writeHead(401).end();
    res.writeHead(307, { location: `http://localhost:${new URL(storage.url).port}/bucket/obj?X-Amz-Signature=s` });
    res.end();
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (origin.closeAllConnections(), origin.close(() => r()))));
  const url = `http://127.0.0.1:${(origin.address() as { port: number }).port}/api/v4/projects/1/packages/generic/p/1/blob.bin`;
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const headers = { 'private-token': 'glpat-secret', 'x-api-key': 'k-secret', authorization: 'Bearer t-secret' };
  const r = await getViaProxy(d.proxyUrl, url, headers);
  t.equal(r.status, 200);
  t.ok(r.body.equals(body), 'the blob, through the redirect');
  // One request goes without it on purpose: the supernode asks whether the blob is public.
  t.ok(originSaw.length > 1 && originSaw.filter((v) => v !== 'glpat-secret').length <= 1, `the origin got its key (${JSON.stringify(originSaw)})`);
  t.ok(storageSaw.length > 0, `the object store served it (${storageSaw.length} requests)`);
  t.same(storageSaw.filter((h) => h.authorization || h['private-token'] || h['x-api-key']), [], 'and never saw a credential');
  t.ok(storageSaw.some((h) => h.range), 'while Damselfly\'s own Range still went there');
});

t.test('dfget takes only its dfdaemon’s own word for a digest: a resumed transfer and an upstream’s header are hashed', async (t) => {
  // An origin whose bytes are not the digest asked for (one byte changed near the end).
  const blob = makeBlob(3 * MiB + 5, 35);
  const digest = sha(blob);
  const tampered = Buffer.from(blob);
  tampered[tampered.length - 100] ^= 1;
  const seen: string[] = [];
  const origin = createServer((req, res) => {
    seen.push(req.headers.range ?? 'none');
    const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '');
    const a = m ? Number(m[1]) : 0;
    const b = m && m[2] ? Math.min(Number(m[2]), tampered.length - 1) : tampered.length - 1;
    // It also asserts the digest, as a registry's Docker-Content-Digest does, and forges the dfdaemon's own header.
    res.writeHead(m ? 206 : 200, { 'content-length': b - a + 1, ...(m ? { 'content-range': `bytes ${a}-${b}/${tampered.length}` } : {}), 'accept-ranges': 'bytes', 'docker-content-digest': digest, 'x-damselfly-verified': digest });
    res.end(tampered.subarray(a, b + 1));
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => origin.close(() => r())));
  const url = `http://127.0.0.1:${(origin.address() as { port: number }).port}/files/tool.tar`;
  // No supernode: the dfdaemon reads the origin itself, checks the whole blob, and cuts the body when it does not
  // match; dfget then asks for the rest as a Range, which a new run serves without the whole-blob check. (--copy: the
  // bytes, not a link answer, which would report the mismatch at once: test dfget-link.)
  const d = await startDaemon(t, []);
  const dir = await tempDir(t);
  const resumed = await dfget([url, '--digest', digest, '-O', join(dir, 'out'), '--daemon', d.proxyUrl, '--no-progress', '--copy']);
  t.equal(resumed.code, 4, `a digest mismatch (${resumed.stderr.trim()})`);
  t.match(resumed.stderr, /digest mismatch/);
  t.ok(seen.some((r) => r !== 'none' && !r.startsWith('bytes=0-')), 'the transfer was resumed from the middle');
  // Straight through the proxy (no P2P): the upstream's own headers assert the digest; dfget hashes anyway.
  const direct = await dfget([url, '--digest', digest, '-O', join(dir, 'out'), '--daemon', d.proxyUrl, '--no-progress', '-H', 'X-Dragonfly-Use-P2P: false']);
  t.equal(direct.code, 4, `a digest mismatch straight through too (${direct.stderr.trim()})`);
  t.same(await readdir(dir), [], 'no output file, no temporary file left');
});

t.test('a registration joined by others is not lost with the session that started it: the others register themselves', async (t) => {
  const body = makeBlob(64 * 1024, 36);
  // The origin holds its first answers until the test lets go, then answers everything at once.
  let hold = true;
  const held: (() => void)[] = [];
  const seen: string[] = [];
  const origin = createServer((req, res) => {
    const auth = req.headers.authorization ?? 'none';
    seen.push(auth);
    const answer = () => {
      if (res.destroyed) return;
      if (auth === 'none') return void res.writeHead(401).end();
      const end = Math.min(Number(/bytes=0-(\d+)/.exec(req.headers.range ?? '')?.[1] ?? 0), body.length - 1);
      res.writeHead(206, { 'content-length': end + 1, 'content-range': `bytes 0-${end}/${body.length}`, 'accept-ranges': 'bytes' });
      res.end(body.subarray(0, end + 1));
    };
    if (hold) held.push(answer);
    else answer();
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (origin.closeAllConnections(), origin.close(() => r()))));
  const url = `http://127.0.0.1:${(origin.address() as { port: number }).port}/private/joined.bin`;
  const sn = await startSupernode(t);
  const [p1, p2] = await Promise.all([rawPeer(sn.url, 'j1', TEST_SECRET), rawPeer(sn.url, 'j2', TEST_SECRET)]);
  t.teardown(() => (p1.close(), p2.close()));
  for (const [p, id] of [[p1, 'j1'], [p2, 'j2']] as const) t.ok((await p.call({ type: 'peer:hello', peerId: id, version: PROTOCOL_VERSION })).ok);
  void p1.call<TaskInfo>({ type: 'task:register', url, headers: { authorization: 'Bearer first' } }).catch(() => {});
  for (let i = 0; i < 200 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  const second = p2.call<TaskInfo>({ type: 'task:register', url, headers: { authorization: 'Bearer second' } });
  await new Promise((r) => setTimeout(r, 100));
  // The first node goes away while its probe is at the origin; the second waits on that registration.
  p1.close();
  await new Promise((r) => setTimeout(r, 200));
  hold = false;
  for (const f of held.splice(0)) f();
  const b = (await second) as { ok: boolean; result?: TaskInfo; error?: { code: string } };
  t.ok(b.ok, `the second registration succeeds (${b.error?.code ?? 'ok'})`);
  t.equal(b.result?.contentLength, body.length);
  t.ok(seen.includes('Bearer second'), 'with a probe of its own, its own headers');
});

t.test('tasks cannot be poisoned: a digest claimed for foreign bytes never serves them as the blob, and is refused once found out', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(9 * MiB, 503);
  const { digest, url } = await pushBlob(reg.url, 'team/poison', blob);
  const foreign = makeBlob(9 * MiB, 504);
  const elsewhere = await serveFile(t, foreign, '/x');
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url], { registries: [reg.url], proxyHosts: ['*'] });

  // 1. The old attack: register the blob's digest for another URL first.
  const post = await request(`${sn.url}/api/v1/tasks`, { method: 'POST', headers: { ...bearer, 'content-type': 'application/json' }, body: JSON.stringify({ url: elsewhere, digest }) });
  const poisoned = (await post.body.json()) as { taskId: string };
  t.equal(post.statusCode, 200);
  t.not(poisoned.taskId, taskIdFor(new URL(url)), "the claim lands in its own task, never the registry's");

  // 2. Readers of the registry's blob get the registry's bytes, whole and by range.
  const r1 = await getViaProxy(d.proxyUrl, url, { range: `bytes=${4 * MiB}-${4 * MiB + 999}` });
  t.ok(r1.body.equals(blob.subarray(4 * MiB, 4 * MiB + 1000)), 'Range: the blob\'s bytes');
  t.equal(sha((await getViaProxy(d.proxyUrl, url)).body), digest, 'whole: the blob');

  // 3. The same claim through the proxy: the supernode finds the bytes are not the digest's; the client gets an error.
  const viaProxy = await getViaProxy(d.proxyUrl, elsewhere, { 'x-damselfly-digest': digest }).catch(() => ({ status: 0, body: Buffer.alloc(0), headers: {} }));
  // An error status, or a transfer the client saw cut: never an answer that ends cleanly, whole or short.
  t.ok(viaProxy.status === 0 || viaProxy.status >= 400, `no complete-looking body (status ${viaProxy.status}, ${viaProxy.body.length} bytes)`);
  t.notOk(viaProxy.body.length === foreign.length && viaProxy.body.equals(foreign), 'never the foreign bytes as the blob');
  t.comment(`proxy answer: ${viaProxy.status}, ${viaProxy.body.length} bytes`);
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_digest_mismatches_total'), 1, 'the supernode caught the mismatch');
  const gone = await request(`${sn.url}/api/v1/tasks/${poisoned.taskId}`, { headers: bearer });
  t.equal(gone.statusCode, 404, 'the poisoned task was dropped');
  await gone.body.dump();
  const again = await request(`${sn.url}/api/v1/tasks`, { method: 'POST', headers: { ...bearer, 'content-type': 'application/json' }, body: JSON.stringify({ url: elsewhere, digest }) });
  t.equal(again.statusCode, 502);
  t.equal(((await again.body.json()) as { code: string }).code, 'SN_DIGEST_MISMATCH', 'and refused when claimed again');
  const rangeAgain = await getViaProxy(d.proxyUrl, elsewhere, { 'x-damselfly-digest': digest, range: 'bytes=0-99' });
  t.equal(rangeAgain.status, 502, 'a Range read under the refused claim is an error, not foreign bytes');

  // 4. The registry's blob is still fine, from any node.
  const d2 = await startDaemon(t, [sn.url], { registries: [reg.url] });
  t.equal(sha((await getViaProxy(d2.proxyUrl, url)).body), digest);
});

t.test('a client the origin refuses, reading a private blob the cluster knows, makes nobody fetch a byte of it', async (t) => {
  const reg = await startRegistry({ htpasswd: `alice:${bcrypt.hashSync('alice-pass', 6)}\n` });
  t.teardown(() => reg.stop());
  const alice = { authorization: basic('alice', 'alice-pass') };
  const blob = makeBlob(10 * MiB, 503);
  const { digest, url } = await pushBlob(reg.url, 'private/refused', blob, alice);
  const sn = await startSupernode(t);
  const first = await startDaemon(t, [sn.url], { registries: [reg.url] });
  // Alice's read makes the task: the piece covering it is seeded with her credentials, and her node holds it.
  const at = 6 * pieceSizeFor(blob.length) + 5;
  const range = `bytes=${at}-${at + 99}`;
  t.equal((await getViaProxy(first.proxyUrl, url, { ...alice, range })).status, 206);
  const taskId = taskIdFor(new URL(url));
  for (let i = 0; i < 500 && !first.store.get(taskId)?.has(6); i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(sn.store.pieceSha(taskId, 6) && first.store.get(taskId)?.has(6), 'piece 6 is in the swarm');
  const before = await reg.settledBytesServed(digest);
  // Alice's own registration made the task with her headers: her read came with it.
  const registered = await metricValue(sn.metrics.registry, 'damselfly_supernode_assignments_total', { how: 'register' });
  t.ok(registered > 0, 'the registration that made the task with her headers stated her read');
  // Mallory, on another node, reads the same range: her node's new run registers the task with her read.
  const other = await startDaemon(t, [sn.url], { registries: [reg.url] });
  const res = await getViaProxy(other.proxyUrl, url, { authorization: basic('alice', 'guess'), range });
  t.equal(res.status, 401, 'she gets the origin’s answer');
  // Her read is not stated as wanted by her registration: her node fetches nothing from the swarm, nor the origin.
  await new Promise((r) => setTimeout(r, 1_000));
  t.equal(other.store.get(taskId)?.presentCount ?? 0, 0, 'her node holds nothing of the private blob');
  t.equal(await metricValue(sn.metrics.registry, 'damselfly_supernode_assignments_total', { how: 'register' }), registered, 'none came with her registration');
  t.equal(reg.blobBytesServed(digest), before, 'the origin served nothing more of the blob');
});

t.test('a cached private blob cannot be read from disk by another local user: the caches are their user\'s alone', async (t) => {
  const reg = await startRegistry({ htpasswd: `alice:${bcrypt.hashSync('alice-pass', 6)}\n` });
  t.teardown(() => reg.stop());
  const alice = { authorization: basic('alice', 'alice-pass') };
  const blob = makeBlob(2 * MiB + 3, 512);
  const { digest } = await pushBlob(reg.url, 'private/disk', blob, alice);
  // Data directories an operator made world-readable, with the store's own directories left so by an older version:
  // the store takes its own back, and leaves the operator's as it is.
  const dirs = { sn: await tempDir(t), df: await tempDir(t) };
  for (const dir of Object.values(dirs)) {
    await chmod(dir, 0o755);
    for (const own of ['tasks', 'index']) await mkdir(join(dir, own), { mode: 0o755 });
  }
  const sn = await startSupernode(t, { dataDir: dirs.sn });
  const d = await startDaemon(t, [sn.url], { registries: [reg.url], proxyHosts: [], dataDir: dirs.df });
  const r = await getViaProxy(d.proxyUrl, `/v2/private/disk/blobs/${digest}`, alice);
  t.equal(sha(r.body), digest, 'alice gets her blob');
  for (const [who, dir] of Object.entries(dirs)) {
    t.equal((await stat(dir)).mode & 0o777, 0o755, `${who}: the operator's directory is left as it was`);
    for (const own of ['tasks', 'index']) t.equal((await stat(join(dir, own))).mode & 0o777, 0o700, `${who}: ${own}/ is the store's user's alone`);
    const files = (await readdir(join(dir, 'tasks'))).filter((f) => f.endsWith('.data'));
    t.equal(files.length, 1, `${who}: the blob is cached`);
    const data = join(dir, 'tasks', files[0]!);
    t.equal(sha(await readFile(data)), digest, `${who}: that file is the blob`);
    if (!asNobody) continue;
    // Another local user (nobody), as a shell on the node would be.
    const other = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'cat', data], { encoding: 'buffer' });
    t.not(other.status, 0, `${who}: another user cannot read it`);
    t.match(other.stderr.toString(), /Permission denied/, `${who}: permission denied`);
    t.equal(other.stdout.length, 0, `${who}: not a byte of it`);
  }

  // A data directory whose parents are missing: they are made with the usual mode (a parent made private would shut
  // out a daemon of another user beside this one), and only the store's own directories are private.
  const base = await tempDir(t);
  const store = new LocalStore(join(base, 'parent', 'df'));
  await store.start();
  t.teardown(() => store.stop());
  const umask = process.umask();
  t.equal((await stat(join(base, 'parent'))).mode & 0o777, 0o777 & ~umask, 'a parent made for it has the usual mode');
  t.equal((await stat(join(base, 'parent', 'df'))).mode & 0o777, 0o777 & ~umask, 'so has the data directory');
  t.equal((await stat(join(base, 'parent', 'df', 'tasks'))).mode & 0o777, 0o700, 'its tasks/ is private');
  t.same(store.exposed, [], 'nothing left exposed');
});

t.test('a store whose directories another user owns starts and works as they are (a pod run as another user since, its volume shared by group)', { skip: !asNobody ? 'needs root and setpriv, to run a daemon as another user than its directories\' owner' : false }, async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(1 * MiB + 9, 513);
  const { url, digest } = await pushBlob(reg.url, 'shared/vol', blob);
  // Root's, and writable by the daemon's user as a volume's group would make them: its own chmod is refused (EPERM).
  const dir = await tempDir(t);
  await chmod(dir, 0o777);
  for (const own of ['tasks', 'index']) {
    await mkdir(join(dir, own));
    await chmod(join(dir, own), 0o777);
  }
  const sn = await startSupernode(t);
  const d = await spawnDaemonProc(t, [sn.url], ['--data-dir', dir], { wrap: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] });
  const r = await getViaProxy(d.proxyUrl, url);
  t.equal(sha(r.body), digest, 'the daemon, run as nobody, serves the blob');
  for (const own of ['tasks', 'index']) {
    t.equal((await stat(join(dir, own))).mode & 0o777, 0o777, `${own}/ left as its owner made it`);
    t.ok(d.output().split('\n').some((l) => l.includes('"msg":"store:exposed"') && l.includes(join(dir, own))), `and the operator is warned that others may read ${own}/`);
  }
  t.ok((await readdir(join(dir, 'tasks'))).some((f) => f.endsWith('.data')), 'and caches it there');

  // Root's chmod succeeds on another user's directory, but its owner still reads the files in it: one made in a
  // shared parent before the store's first start is logged too, and the same at every start, not once more each.
  const planted = await tempDir(t);
  for (const own of ['tasks', 'index']) {
    await mkdir(join(planted, own), { mode: 0o700 });
    await chown(join(planted, own), 65534, 65534);
  }
  const store = new LocalStore(planted);
  await store.start();
  t.teardown(() => store.stop());
  t.same(store.exposed, [join(planted, 'tasks'), join(planted, 'index')], 'a directory another user owns is exposed, though 0700');
  await store.stop();
  await store.start();
  t.equal(store.exposed.length, 2, 'counted once after a second start');
});
