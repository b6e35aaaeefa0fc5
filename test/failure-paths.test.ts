/**
 * Failure paths end cleanly, against the real binaries: hostile and malformed requests never take a daemon down,
 * slow-loris sockets are dropped, and SIGTERM mid-pull on a loaded swarm exits within the grace.
 */
import t from 'tap';
import { getEventListeners } from 'node:events';
import { SupernodeClient } from '@damselfly/peer';
import { execFile } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { createServer } from 'node:http';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { TEST_SECRET, getViaProxy, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { shapedOrigin, versionedOrigin } from './helpers/file-server.js';
import { spawnDaemonProc, spawnSupernodeProc } from './helpers/procs.js';
import { throttledRelay } from './helpers/throttle.js';
import { dfget } from './helpers/dfget.js';

const MiB = 1024 * 1024;

/** Writes `data` to host:port, waits for the server to answer or close (at most `ms`), returns what came back. */
function raw(url: string, data: string | Buffer, { ms = 2_000, destroyAfterWrite = false } = {}): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s: Socket = connect(Number(u.port), u.hostname);
    let got = '';
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve(got);
    };
    const timer = setTimeout(done, ms);
    s.on('data', (d) => (got += d.toString('latin1')));
    s.on('error', done);
    s.on('close', done);
    s.on('connect', () => {
      s.write(data);
      if (destroyAfterWrite) s.resetAndDestroy();
    });
  });
}

async function healthy(url: string): Promise<number> {
  const r = await request(`${url}/healthy`);
  await r.body.dump();
  return r.statusCode;
}

const curl = (args: string[]) =>
  new Promise<{ code: number; out: string }>((resolve) =>
    execFile('curl', ['-sS', '--max-time', '5', ...args], (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr })),
  );

t.test('no request, however malformed, takes a daemon down: CONNECT storm, TRACE, bad URLs, torn connections, garbage', async (t) => {
  const sn = await spawnSupernodeProc(t);
  const d = await spawnDaemonProc(t, [sn.url]);
  // The CONNECT that used to kill the dfdaemon (an HTTPS_PROXY user, nydusd with use_http: false), 30 times over.
  const storm = await Promise.all(Array.from({ length: 30 }, () => curl(['-x', d.proxyUrl, 'https://registry.example.invalid/v2/'])));
  t.ok(storm.every((r) => r.code !== 0 && /CONNECT tunnel failed, response 405/.test(r.out)), `each CONNECT is refused plainly (405): ${storm[0]?.out.trim()}`);
  // CONNECTs torn down by the client mid-answer (the ECONNRESET that was uncaught).
  await Promise.all(Array.from({ length: 20 }, () => raw(d.proxyUrl, 'CONNECT example.invalid:443 HTTP/1.1\r\nHost: example.invalid:443\r\n\r\n', { destroyAfterWrite: true })));

  const junk: (string | Buffer)[] = [
    'TRACE / HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET http://%zz%/x HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /v2/../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /pieces/../../x/0 HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /api/v1/tasks/zz/pieces/99999999999999999999 HTTP/1.1\r\nHost: x\r\n\r\n',
    `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`,
    'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    'GET /v2/x/blobs/sha256:' + '0'.repeat(64) + ' HTTP/1.1\r\nHost: x\r\nRange: bytes=99999999999999999999-\r\n\r\n',
    'POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{"ur',
    'GET /api/v1/peers/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\n',
    Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), // a TLS ClientHello on a plain port
    Buffer.alloc(4096, 0xff),
    'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n',
    'GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nzz\r\n',
  ];
  for (const target of [d.proxyUrl, d.uploadUrl, d.healthUrl, sn.url]) {
    await Promise.all(junk.map((j) => raw(target, j)));
    await Promise.all(junk.map((j) => raw(target, j, { destroyAfterWrite: true })));
    // Half a request, then the client vanishes.
    await Promise.all(Array.from({ length: 10 }, () => raw(target, 'GET /v2/library/x/blobs/sha256:', { destroyAfterWrite: true })));
  }
  t.equal(d.child.exitCode, null, 'dfdaemon still running');
  t.equal(sn.child.exitCode, null, 'supernode still running');
  t.equal(await healthy(d.proxyUrl), 200, 'proxy answers');
  t.equal(await healthy(d.uploadUrl), 200, 'upload server answers');
  t.equal(await healthy(sn.url), 200, 'supernode answers');
  t.notMatch(d.output() + sn.output(), /uncaught|unhandled/i, 'nothing uncaught in the logs');
});

t.test('a frozen supernode (SIGSTOP) is noticed by its peers; a refused hello and a timed-out request leave nothing behind', async (t) => {
  const sn = await spawnSupernodeProc(t);
  const trust = { secret: Buffer.from(TEST_SECRET), tls: undefined, insecure: false };
  const a = new SupernodeClient(sn.url, { peerId: 'node-a' }, trust, { heartbeatMs: 300 });
  t.teardown(() => a.close());
  await a.connect();
  // A second connection for an id a live peer holds is refused; its socket must not stay open (a late answer to its
  // hello would bind the id to a socket nobody uses, which would keep the peer out of this supernode).
  const b = new SupernodeClient(sn.url, { peerId: 'node-a' }, trust);
  t.teardown(() => b.close());
  let bClosed = false;
  b.on('close', () => (bClosed = true));
  const refused = await b.connect().then(() => undefined, (err: { remoteCode?: string }) => err);
  t.equal(refused?.remoteCode, 'SN_PEER_ID_TAKEN', 'the id is a live peer’s');
  t.notOk(b.connected, 'the refused connection is let go');
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(bClosed, 'a connect that failed says so by throwing, not also as a lost connection');

  sn.child.kill('SIGSTOP');
  t.teardown(() => void sn.child.kill('SIGCONT'));
  // Bounded, so a peer that never notices fails here rather than hanging the file.
  let giveUp: NodeJS.Timeout | undefined;
  const closed = new Promise<number>((resolve) => {
    const t0 = performance.now();
    a.once('close', () => resolve(performance.now() - t0));
    giveUp = setTimeout(() => resolve(Infinity), 5_000);
  }).finally(() => clearTimeout(giveUp));
  // A request the frozen supernode never answers times out and takes its listener off the caller's signal.
  const caller = new AbortController();
  await t.rejects(a.request({ type: 'task:status', taskId: 'f'.repeat(64) }, { signal: caller.signal, timeoutMs: 100 }), { code: 'DF_SUPERNODE_UNAVAILABLE' });
  t.equal(getEventListeners(caller.signal, 'abort').length, 0, 'no listener left on the caller’s signal');
  // The socket stays open (the process holds it), but the supernode answers no ping: the peer lets it go, so its
  // downloads go back to the origin instead of waiting for assignments forever.
  const ms = await closed;
  t.ok(ms < 3_000, `the peer gave the frozen supernode up after ${Math.round(ms)} ms (heartbeat 300 ms)`);
  t.notOk(a.connected, 'and says it is not connected');
});

t.test('back-to-source: the first piece the origin refuses stops the others; nothing more is fetched for a failed run', async (t) => {
  const MiB = 1024 * 1024;
  const blob = makeBlob(24 * MiB, 61);
  let refused = false;
  // Piece 0 (1 MiB pieces) is refused; every other piece is answered 100 ms late, so the workers are mid-way when it is.
  const origin = await shapedOrigin(t, blob, (_i, r, res) => {
    if (r?.start === 0 && r.end === MiB - 1) {
      refused = true;
      res.writeHead(500).end();
      return true;
    }
    if (!r || r.end - r.start + 1 !== MiB) return;
    setTimeout(() => {
      if (res.destroyed) return;
      res.writeHead(206, { 'content-length': MiB, 'content-range': `bytes ${r.start}-${r.end}/${blob.length}` });
      res.end(blob.subarray(r.start, r.end + 1));
    }, 100);
    return true;
  });
  const d = await startDaemon(t, []);
  const r = await getViaProxy(d.proxyUrl, origin.url);
  t.ok(r.body.equals(blob), `the client still gets the file, straight from the origin (status ${r.status})`);
  t.ok(refused, 'piece 0 was refused');
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  // Four workers start pieces 0-3 together; the three beside the refused one are cut, and no piece after them starts.
  const others = origin.ranges.filter((x) => /^bytes=\d+-\d+$/.test(x) && x !== 'bytes=0-0' && x !== `bytes=0-${MiB - 1}`);
  t.ok(others.length <= 3, `only the pieces already asked for beside it: ${others.length} of the other 23`);
});

t.test('an origin without Range that drips its body: the one sequential read is cut, its readers get an error, the host\'s slot comes back', async (t) => {
  const MiB = 2 ** 20;
  const body = makeBlob(2 * MiB, 93);
  const drips: NodeJS.Timeout[] = [];
  t.teardown(() => drips.forEach(clearInterval));
  // Range is ignored: every answer is the whole object. /slow drips it, 100 bytes every 200 ms; /fine sends it.
  let probes = 0;
  const origin = createServer((req, res) => {
    res.writeHead(200, { 'content-length': body.length });
    // The size probe of each object gets it whole (and drops the connection); the read after it drips.
    if (req.url === '/slow' && probes++ > 0) {
      let at = 0;
      const drip = setInterval(() => res.write(body.subarray(at, (at += 100))), 200);
      drips.push(drip);
      res.on('close', () => clearInterval(drip));
    } else res.end(body);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (origin.closeAllConnections(), origin.close(() => r()))));
  const host = `http://127.0.0.1:${(origin.address() as { port: number }).port}`;
  const sn = await startSupernode(t, { originTimeoutSeconds: 1, originConcurrency: 1 });
  const slow = await sn.seeder.register(new URL(`${host}/slow`), undefined, {}, { requester: 'p' });
  t.equal(slow.acceptsRanges, false, 'the origin ignores Range');
  const t0 = Date.now();
  const got = await sn.seeder.ensurePiece(slow.taskId, 1, { requester: 'p' }).then(() => 'served', (err: { code?: string }) => err.code);
  t.equal(got, 'SN_SEED_FAILED', 'the reader of a piece gets an error');
  t.ok(Date.now() - t0 < 8_000, `within a piece deadline per piece (${Date.now() - t0} ms)`);
  t.notOk(sn.seeder.busy(slow.taskId), 'and nothing is left reading');
  // The only origin slot is free again: another object at the same host is seeded.
  const fine = await sn.seeder.register(new URL(`${host}/fine`), undefined, {}, { requester: 'p' });
  t.match(await sn.seeder.ensurePiece(fine.taskId, 1, { requester: 'p' }), /^[0-9a-f]{64}$/, 'another object of the host is seeded after it');
});

t.test('an origin without Range whose object is not its digest: the last piece is refused, never handed out whole', async (t) => {
  const MiB = 2 ** 20;
  const body = makeBlob(3 * MiB, 94);
  const origin = createServer((_req, res) => void res.writeHead(200, { 'content-length': body.length }).end(body));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (origin.closeAllConnections(), origin.close(() => r()))));
  const sn = await startSupernode(t);
  const claimed = `sha256:${'ab'.repeat(32)}`;
  const meta = await sn.seeder.register(new URL(`http://127.0.0.1:${(origin.address() as { port: number }).port}/object`), claimed, {}, { requester: 'p' });
  t.equal(meta.acceptsRanges, false);
  t.ok(meta.pieceCount >= 2, `${meta.pieceCount} pieces`);
  const results = await Promise.all([...Array(meta.pieceCount).keys()].map((n) => sn.seeder.ensurePiece(meta.taskId, n, { requester: 'p' }).then(() => 'served', (err: { code?: string }) => err.code)));
  // Earlier pieces cannot know yet (the digest needs every byte); the piece that completes the check learns it.
  t.equal(results.at(-1), 'SN_DIGEST_MISMATCH', `the last piece: ${results.join(', ')}`);
});

t.test('an object that changes at the origin while the supernode seeds it: the task is dropped, and its next version is seeded whole, untouched by seedings of the old', async (t) => {
  const MiB = 2 ** 20;
  const size = 3 * MiB;
  const versions: Record<string, Buffer> = { A: makeBlob(size, 95), B: makeBlob(size, 96) };
  let current = 'A';
  let slowA = true;
  // Version A's piece 1 comes late: it is still being seeded when the object changes (the change waits for the
  // origin to have that request, rather than for a time that a busy machine may outlast).
  let asked!: () => void;
  const piece1Asked = new Promise<void>((r) => (asked = r));
  const origin = await versionedOrigin(t, versions, () => current, (tag, start) => {
    const late = tag === 'A' && slowA && start >= MiB && start < 2 * MiB;
    if (late) asked();
    return late ? 800 : 0;
  });
  const url = new URL(`${origin.url}/mutable`);
  const sn = await startSupernode(t, { minPieceSize: '1MiB' });
  const first = await sn.seeder.register(url, undefined, {}, { requester: 'p' });
  t.equal(first.pieceCount, 3);
  const oldPiece1 = sn.seeder.ensurePiece(first.taskId, 1, { requester: 'p' }).then(() => 'seeded', (err: { code?: string }) => err.code);
  await Promise.race([piece1Asked, new Promise((_, reject) => setTimeout(() => reject(new Error('piece 1 of version A was never asked of the origin')), 10_000).unref())]);
  current = 'B';
  const changed = await sn.seeder.ensurePiece(first.taskId, 2, { requester: 'p' }).then(() => 'seeded', (err: { code?: string }) => err.code);
  t.equal(changed, 'ORIGIN_CHANGED', 'a piece asked of version A gets version B: refused');
  t.notOk(sn.store.get(first.taskId), 'and the task is dropped');
  slowA = false;
  const second = await sn.seeder.register(url, undefined, {}, { requester: 'p' });
  t.equal(second.taskId, first.taskId, 'registered again: the same task id, a new record');
  for (const n of [0, 1, 2]) await sn.seeder.ensurePiece(second.taskId, n, { requester: 'p' });
  t.not(await oldPiece1, 'seeded', 'the old seeding of piece 1 ends without a piece');
  t.equal(sn.store.get(second.taskId), second, 'the new record was not dropped by it');
  t.ok((await readFile(sn.store.dataPath(second.taskId))).equals(versions.B!), 'and the new task holds version B whole');
});

t.test('slow-loris: a socket dribbling its headers is dropped within seconds on every server', async (t) => {
  const sn = await spawnSupernodeProc(t);
  const d = await spawnDaemonProc(t, [sn.url]);
  const dribble = (url: string) =>
    new Promise<number>((resolve) => {
      const u = new URL(url);
      const t0 = performance.now();
      const s = connect(Number(u.port), u.hostname, () => s.write('GET /healthy HTTP/1.1\r\nHost: x\r\n'));
      const tick = setInterval(() => s.write('X-a: b\r\n'), 1000);
      const end = () => {
        clearInterval(tick);
        resolve(performance.now() - t0);
      };
      s.on('close', end);
      s.on('error', () => {});
      setTimeout(() => s.destroy(), 40_000);
    });
  const times = await Promise.all([d.proxyUrl, d.uploadUrl, d.healthUrl, sn.url].map(dribble));
  for (const [i, ms] of times.entries()) t.ok(ms < 15_000, `server ${i} dropped the dribbling socket after ${(ms / 1000).toFixed(1)} s`);
});

t.test('SIGTERM mid-pull on a loaded swarm: every daemon exits 0 within the grace, clients see an error and keep no file', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(64 * MiB, 701);
  const { digest } = await pushBlob(reg.url, 'team/sigterm', blob);
  const relay = await throttledRelay({ host: '127.0.0.1', port: Number(new URL(reg.url).port) }, 8 * 1e6);
  t.teardown(() => relay.close());
  const url = `${relay.url}/v2/team/sigterm/blobs/${digest}`;
  const sn = await spawnSupernodeProc(t, ['--shutdown-grace-seconds', '10']);
  const daemons = await Promise.all([0, 1, 2].map(() => spawnDaemonProc(t, [sn.url], ['--shutdown-grace-seconds', '10'])));
  const dir = await tempDir(t);
  const pulls = daemons.map((d, i) => dfget([url, '-O', join(dir, `out${i}`), '--daemon', d.proxyUrl, '--no-progress']));
  // Wait until the swarm is busy: pieces have arrived on a node.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = await (await fetch(`${daemons[0]!.healthUrl}/metrics`)).text();
    const got = [...m.matchAll(/damselfly_dfdaemon_download_bytes_total\{source="\w+"\} (\d+)/g)].reduce((s, x) => s + Number(x[1]), 0);
    if (got >= 8 * MiB) break;
    if (Date.now() > deadline) throw new Error('the pull did not progress');
    await new Promise((r) => setTimeout(r, 50));
  }
  const exits = [...daemons, sn].map((p) => {
    const e = p.exited();
    p.child.kill('SIGTERM');
    return e;
  });
  const results = await Promise.all(exits);
  for (const [i, r] of results.entries()) {
    const name = i < daemons.length ? `dfdaemon ${i}` : 'supernode';
    t.equal(r.code, 0, `${name} exited 0 (${r.signal ?? ''})`);
    t.ok(r.ms < 10_000, `${name} exited ${(r.ms / 1000).toFixed(2)} s after SIGTERM`);
    t.comment(`${name}: exit ${(r.ms / 1000).toFixed(2)} s after SIGTERM mid-pull`);
  }
  const clients = await Promise.all(pulls);
  for (const [i, c] of clients.entries()) t.not(c.code, 0, `client ${i} failed (${c.stderr.trim().slice(0, 120)})`);
  t.same(await readdir(dir), [], 'no partial or temporary files');
});

t.test('a silent peer and a 1 byte/s peer are routed around within about one piece timeout (real binaries)', async (t) => {
  const { startBadPeer } = await import('./helpers/bad-peer.js');
  const { getViaProxy } = await import('./helpers/cluster.js');
  const { scrapeMetric } = await import('./helpers/metrics.js');
  const { createHash } = await import('node:crypto');
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  for (const mode of ['silent', 'drip'] as const) {
    const blob = makeBlob(8 * MiB, mode === 'silent' ? 702 : 703);
    const { digest, url } = await pushBlob(reg.url, `team/${mode}`, blob);
    const sn = await spawnSupernodeProc(t);
    const seed = await spawnDaemonProc(t, [sn.url]);
    await getViaProxy(seed.proxyUrl, url);
    const gone = seed.exited();
    seed.child.kill('SIGTERM');
    await gone;
    const bad = await startBadPeer(sn.url, url, undefined, `${mode}-peer`, mode);
    t.teardown(() => bad.close());
    const d = await spawnDaemonProc(t, [sn.url], ['--piece-timeout-ms', '30000']);
    const t0 = performance.now();
    const r = await getViaProxy(d.proxyUrl, url);
    const secs = (performance.now() - t0) / 1000;
    t.equal(`sha256:${createHash('sha256').update(r.body).digest('hex')}`, digest, `${mode}: the blob arrived whole`);
    t.ok(bad.served > 0, `${mode}: the bad peer was tried (${bad.served} requests)`);
    t.ok((await scrapeMetric(d.healthUrl, 'damselfly_dfdaemon_piece_failures_total', { reason: 'timeout' })) >= 1, `${mode}: counted as a timeout`);
    t.ok(secs < 10, `${mode}: routed around in ${secs.toFixed(1)} s (piece deadline 30 s)`);
    t.comment(`${mode} peer: pull of 2 pieces finished ${secs.toFixed(2)} s after the request (peer headers 5 s, minimum rate 256 KiB/s 3 s after the answer)`);
  }
});

t.test('300 tasks under ulimit -n 256: open files stay bounded on the supernode and the dfdaemon', async (t) => {
  const { createServer } = await import('node:http');
  const { createHash } = await import('node:crypto');
  const { Pool } = await import('undici');
  // Distinct per task, cheap to make (makeBlob expands a 1 MiB seed each call).
  const body = (i: number) => {
    const b = Buffer.alloc(64 * 1024, i % 251);
    b.writeUInt32BE(i, 0);
    return b;
  };
  const files = createServer((req, res) => {
    const i = Number(/^\/f\/(\d+)$/.exec(req.url ?? '')?.[1] ?? -1);
    if (i < 0) return void res.writeHead(404).end();
    const b = body(i);
    const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
    if (!m) return void res.writeHead(200, { 'content-length': b.length }).end(b);
    const [s, e] = [Number(m[1]), Math.min(Number(m[2]), b.length - 1)];
    res.writeHead(206, { 'content-range': `bytes ${s}-${e}/${b.length}`, 'content-length': e - s + 1 }).end(b.subarray(s, e + 1));
  });
  await new Promise<void>((r) => files.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise((r) => files.close(r)));
  const base = `http://127.0.0.1:${(files.address() as { port: number }).port}`;
  const COUNT = Number(process.env.EMFILE_TASKS ?? 300);
  const wrap = ['prlimit', '--nofile=256:256'];
  const sn = await spawnSupernodeProc(t, [], { wrap });
  const d = await spawnDaemonProc(t, [sn.url], [], { wrap });
  const client = new Pool(d.proxyUrl, { connections: 8 });
  t.teardown(() => client.close());
  let ok = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < COUNT) {
        const i = next++;
        const res = await client.request({ method: 'GET', path: `${base}/f/${i}` });
        const got = Buffer.from(await res.body.arrayBuffer());
        if (res.statusCode === 200 && createHash('sha256').update(got).digest('hex') === createHash('sha256').update(body(i)).digest('hex')) ok++;
      }
    }),
  );
  t.equal(ok, COUNT, `all ${COUNT} blobs arrived whole through the dfdaemon`);
  t.equal(d.child.exitCode, null);
  t.equal(sn.child.exitCode, null);
  t.equal(await healthy(d.proxyUrl), 200);
  t.equal(await healthy(sn.url), 200);
  t.notMatch(d.output() + sn.output(), /EMFILE|too many open files/i, 'never out of descriptors');
  const m = await (await fetch(`${d.healthUrl}/metrics`)).text();
  t.equal(Number(/damselfly_dfdaemon_back_source_total\{[^}]*\} (\d+)/.exec(m)?.[1] ?? 0), 0, 'every one went through the supernode');
});
