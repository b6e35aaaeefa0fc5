/**
 * dfget through its node's dfdaemon takes the dfdaemon's own verified copy as its output, by a hard link, instead of
 * having the blob sent over loopback and written a second time; and the dfdaemon, whose file the user now holds too,
 * never serves a byte of it once the user changed it (to a client or a peer), nor writes into it again.
 */
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { chmod, chown, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { getViaProxy, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { mountTmpfs, tmpfsUnavailable } from './helpers/tmpfs.js';
import { runDfget } from './helpers/dfget-child.js';
import { httpServer } from './helpers/broken-server.js';
import { until } from './helpers/until.js';
import type { Daemon } from '@damselfly/dfdaemon';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const reg = await startRegistry();
t.teardown(() => reg.stop());

/** The counter's value for proxy answers of this kind (and status). */
async function answered(d: Daemon, kind: string, status?: number): Promise<number> {
  return (await d.metrics.proxyRequests.get()).values.filter((v) => v.labels.kind === kind && (status === undefined || String(v.labels.status) === String(status))).reduce((a, v) => a + v.value, 0);
}

/** The dfdaemon's data file for its only task. */
function dataFile(d: Daemon): string {
  const tasks = [...d.store.tasks()];
  if (tasks.length !== 1) throw new Error(`${tasks.length} tasks cached`);
  return tasks[0]!.dataPath;
}

/** Overwrites the file's first byte in place, as a user editing their output would (same size, new mtime). */
async function scribble(path: string): Promise<void> {
  // Past the filesystem's timestamp granularity since the dfdaemon's last write.
  await sleep(30);
  const fh = await open(path, 'r+');
  try {
    await fh.write(Buffer.from('X'), 0, 1, 0);
  } finally {
    await fh.close();
  }
}

/** A blob pushed, a supernode and a dfdaemon, and dfget's pull of the blob through it into `out` (linked, if it can). */
async function pulledWithDfget(t: Test, repo: string, size: number, seed: number) {
  const blob = makeBlob(size, seed);
  const { url, digest } = await pushBlob(reg.url, repo, blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const dir = await tempDir(t);
  const out = join(dir, 'mine');
  t.equal((await runDfget([url, '-O', out, '--daemon', d.proxyUrl, '--no-progress'])).code, 0);
  return { blob, url, digest, sn, d, dir, out };
}

t.test('the output is the dfdaemon\'s verified copy, linked: no byte of it crosses loopback; --copy and --verify', async (t) => {
  const blob = makeBlob(12 * MiB + 5, 301);
  const { url, digest } = await pushBlob(reg.url, 'link/plain', blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const dir = await tempDir(t);

  const r = await runDfget([url, '-O', join(dir, 'a'), '--daemon', d.proxyUrl, '--no-progress']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /verified by the dfdaemon, linked to its cached copy/, 'says what it did');
  const [out, cached] = await Promise.all([stat(join(dir, 'a')), stat(dataFile(d))]);
  t.equal(out.ino, cached.ino, 'one file: the output is the dfdaemon\'s cached copy');
  t.equal(out.nlink, 2, 'under two names');
  t.equal(sha(await readFile(join(dir, 'a'))), digest, 'the blob');
  t.equal(await answered(d, 'link'), 1, 'answered with the file\'s name');
  t.equal(await answered(d, 'p2p'), 0, 'not with the bytes');

  const copy = await runDfget([url, '-O', join(dir, 'b'), '--daemon', d.proxyUrl, '--no-progress', '--copy']);
  t.equal(copy.code, 0, copy.stderr);
  t.notMatch(copy.stderr, /linked/);
  t.not((await stat(join(dir, 'b'))).ino, cached.ino, '--copy: a file of its own');
  t.equal(sha(await readFile(join(dir, 'b'))), digest);
  t.equal(await answered(d, 'p2p'), 1, 'sent as bytes');

  // One holder at a time: while `a` is the cached file, another run gets a file of its own (two outputs that were
  // one file would change together).
  const second = await runDfget([url, '-O', join(dir, 'c'), '--daemon', d.proxyUrl, '--no-progress']);
  t.equal(second.code, 0, second.stderr);
  t.notMatch(second.stderr, /linked/);
  t.not((await stat(join(dir, 'c'))).ino, cached.ino, 'a file of its own while another holds the copy');
  t.equal(sha(await readFile(join(dir, 'c'))), digest);

  // Its holder gone, the copy can be handed out again. --verify: linked, and hashed here rather than taken on the
  // dfdaemon's word.
  await rm(join(dir, 'a'));
  const verified = await runDfget([url, '-O', join(dir, 'd'), '--daemon', d.proxyUrl, '--no-progress', '--verify']);
  t.equal(verified.code, 0, verified.stderr);
  t.match(verified.stderr, new RegExp(`${digest} \\(linked to its cached copy\\)`));
  t.equal((await stat(join(dir, 'd'))).ino, cached.ino, 'linked again');
  t.equal(await answered(d, 'link'), 2);
});

t.test('an output on another filesystem gets the bytes at once, not after the download', { skip: tmpfsUnavailable() ?? false }, async (t) => {
  const blob = makeBlob(6 * MiB, 302);
  const { url, digest } = await pushBlob(reg.url, 'link/elsewhere', blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const dir = await mountTmpfs(t, 'size=16m');
  const r = await runDfget([url, '-O', join(dir, 'f'), '--daemon', d.proxyUrl, '--no-progress']);
  t.equal(r.code, 0, r.stderr);
  t.notMatch(r.stderr, /linked/);
  t.equal(sha(await readFile(join(dir, 'f'))), digest);
  t.equal((await stat(join(dir, 'f'))).nlink, 1, 'a file of its own');
  // The link answer was given up at its first line (the file is on another filesystem): the bytes were asked for
  // while the download ran, and that answer is the one that counted.
  t.equal(await answered(d, 'p2p'), 1, 'sent as bytes');
  t.equal(await answered(d, 'link'), 0, 'no link answer completed');
  t.equal(await reg.settledBytesServed(digest, blob.length), blob.length, 'the registry served the blob once');
});

t.test('a linked output its user changed is never served, to clients or peers, and never written into again', async (t) => {
  const { blob, url, digest, sn, d, dir, out } = await pulledWithDfget(t, 'link/changed', 10 * MiB + 3, 303);
  const linked = (await stat(out)).ino;
  t.equal((await stat(dataFile(d))).ino, linked, 'linked');
  await scribble(out);

  // A second node: its pieces come from anyone but the changed file.
  const d2 = await startDaemon(t, [sn.url]);
  const peer = await getViaProxy(d2.proxyUrl, url);
  t.equal(peer.status, 200);
  t.equal(sha(peer.body), digest, 'the second node got the blob');
  t.equal((await d.metrics.uploadBytes.get()).values[0]?.value ?? 0, 0, 'the changed file gave a peer no byte');

  // A Range read of the changed byte, and the whole blob, through the mirror: the blob's bytes, never the user's.
  const first = await getViaProxy(d.proxyUrl, url, { range: 'bytes=0-0' });
  t.equal(first.status, 206);
  t.same(first.body, blob.subarray(0, 1), 'the blob\'s first byte, not the user\'s');
  const whole = await getViaProxy(d.proxyUrl, url);
  t.equal(sha(whole.body), digest, 'the whole blob');

  const mine = await readFile(out);
  t.equal(mine[0], 'X'.charCodeAt(0), 'the user\'s change stands: the dfdaemon did not repair their file');
  t.same(mine.subarray(1), blob.subarray(1));
  t.equal((await stat(out)).nlink, 1, 'the dfdaemon let go of it');

  // A later dfget gets a fresh, right copy (linked to the dfdaemon's new one), never the changed file.
  const again = await runDfget([url, '-O', join(dir, 'again'), '--daemon', d.proxyUrl, '--no-progress']);
  t.equal(again.code, 0, again.stderr);
  t.equal(sha(await readFile(join(dir, 'again'))), digest);
  t.not((await stat(join(dir, 'again'))).ino, linked);
});

/** Sets a file's mtime to the nanosecond (GNU touch; Node's utimes takes seconds as a double and rounds). */
async function setMtimeNs(path: string, ns: bigint): Promise<void> {
  await promisify(execFile)('touch', ['-m', '-d', `@${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, '0')}`, path]);
}

t.test('a change the stamp cannot see (its mtime set back, as a write landing right after a stamp check) is caught by the bytes themselves, for clients and peers', async (t) => {
  const { blob, url, digest, sn, d, dir, out } = await pulledWithDfget(t, 'link/unstamped', 6 * MiB + 5, 305);
  t.equal((await stat(out)).nlink, 2, 'linked');
  /** One byte of the user's file changed in place, its mtime put back: size, mtime, owner, group and mode as stamped. */
  const unstamped = async (at: number) => {
    const before = await stat(out, { bigint: true });
    const fh = await open(out, 'r+');
    try {
      await fh.write(Buffer.from([blob[at]! ^ 0xff]), 0, 1, at);
    } finally {
      await fh.close();
    }
    await setMtimeNs(out, before.mtimeNs);
    t.equal((await stat(out, { bigint: true })).mtimeNs, before.mtimeNs, 'the stamp cannot tell');
  };
  /** The blob pulled by dfget once more (linked to the dfdaemon's new copy), as the user's file `out`. */
  const handOutAgain = async () => {
    const next = join(dir, 'next');
    t.equal((await runDfget([url, '-O', next, '--daemon', d.proxyUrl, '--no-progress'])).code, 0);
    t.equal((await stat(next)).nlink, 2, 'linked');
    await rm(out);
    await rename(next, out);
  };
  const at = 3 * MiB + 1000;
  await unstamped(at);

  // A Range read over the changed byte, from the cache: cut, never the user's byte.
  await t.rejects(getViaProxy(d.proxyUrl, url, { range: `bytes=${at - 100}-${at + 100}` }), 'the answer is cut at the block that does not match');
  // (The store removes the task's name of the file right after the answer is cut.)
  await until('the dfdaemon let go of the file', async () => (await stat(out)).nlink === 1);
  t.equal((await stat(out)).nlink, 1, 'the dfdaemon let go of the file');
  const range = await getViaProxy(d.proxyUrl, url, { range: `bytes=${at - 100}-${at + 100}` });
  t.equal(range.status, 206);
  t.same(range.body, blob.subarray(at - 100, at + 101), 'asked again: the blob\'s bytes, from a new download');
  t.equal((await readFile(out))[at], blob[at]! ^ 0xff, 'the user\'s change stands');

  // Handed out again (to a new output) and changed the same way: a whole answer is cut before the changed block too,
  // where its last block's stamp check alone let a complete wrong body through.
  await handOutAgain();
  await unstamped(at);
  await t.rejects(getViaProxy(d.proxyUrl, url), 'the whole answer is cut');
  t.equal(sha((await getViaProxy(d.proxyUrl, url)).body), digest, 'asked again: the blob');

  // And for a peer: handed out and changed once more, then a second node fetches the blob, its one holder this node.
  await handOutAgain();
  await unstamped(at);
  const d2 = await startDaemon(t, [sn.url]);
  const peer = await getViaProxy(d2.proxyUrl, url);
  t.equal(sha(peer.body), digest, 'the second node got the blob');
  await until('the upload server found the change and the dfdaemon let go of the file', async () => (await stat(out)).nlink === 1);
  t.equal((await stat(out)).nlink, 1, 'the upload server found the change and the dfdaemon let go of the file');
});

t.test('the hand-out is remembered across a restart: a file changed while the dfdaemon was down is not served', async (t) => {
  const blob = makeBlob(4 * MiB, 304);
  const { url, digest } = await pushBlob(reg.url, 'link/restart', blob);
  const sn = await startSupernode(t);
  const dataDir = await tempDir(t, 'damselfly-df-');
  const dir = await tempDir(t);
  const out = join(dir, 'mine');
  const d = await startDaemon(t, [sn.url], { dataDir });
  t.equal((await runDfget([url, '-O', out, '--daemon', d.proxyUrl, '--no-progress'])).code, 0);
  t.equal((await stat(out)).nlink, 2, 'linked');
  await d.stop();
  await scribble(out);

  const back = await startDaemon(t, [sn.url], { dataDir });
  t.equal([...back.store.tasks()].length, 1, 'the task was found again at start-up');
  const first = await getViaProxy(back.proxyUrl, url, { range: 'bytes=0-1023' });
  t.equal(first.status, 206);
  t.same(first.body, blob.subarray(0, 1024), 'the blob\'s bytes, not the user\'s');
  t.equal(sha((await getViaProxy(back.proxyUrl, url)).body), digest);
  t.equal((await readFile(out))[0], 'X'.charCodeAt(0), 'the user\'s file as they left it');
});

t.test('a chmod or chown of a linked output counts as a change: whoever may write it now could set its mtime back', async (t) => {
  const { blob, url, digest, d, dir, out } = await pulledWithDfget(t, 'link/mode', 3 * MiB, 305);
  t.equal((await stat(out)).nlink, 2, 'linked');
  await chmod(out, 0o666);
  // The first read after the change is a Range read the cache could answer: the change is found before the answer
  // starts (not with the answer cut), and the blob comes from the swarm again, not the registry.
  const first = await getViaProxy(d.proxyUrl, url, { range: 'bytes=0-0' });
  t.equal(first.status, 206, 'answered, not cut');
  t.same(first.body, blob.subarray(0, 1));
  t.equal(sha((await getViaProxy(d.proxyUrl, url)).body), digest, 'the blob, fetched anew');
  t.equal((await stat(out)).nlink, 1, 'the dfdaemon let go of the file whose mode changed');
  t.equal(await reg.settledBytesServed(digest, blob.length), blob.length, 'from the swarm: the registry served the blob once');
  if (process.getuid?.() !== 0) return;
  const again = join(dir, 'again');
  t.equal((await runDfget([url, '-O', again, '--daemon', d.proxyUrl, '--no-progress'])).code, 0);
  t.equal((await stat(again)).nlink, 2, 'linked');
  await chown(again, 65534, 65534);
  // A whole read first this time: found before its answer starts too.
  t.equal(sha((await getViaProxy(d.proxyUrl, url)).body), digest);
  t.equal((await stat(again)).nlink, 1, 'and of the one given to another user');
  t.equal(await reg.settledBytesServed(digest, blob.length), blob.length, 'the registry still served the blob once');
});

t.test('dfget links only a file its own user owns and nobody else may write: a lying "dfdaemon" gets the bytes asked for', async (t) => {
  const blob = makeBlob(1 * MiB, 306);
  const digest = sha(blob);
  const dir = await tempDir(t);
  const planted = join(dir, 'planted');
  await writeFile(planted, blob);
  const root = process.getuid?.() === 0;
  // Another user's file (root can make one), or, without root, one others may write.
  if (root) await chown(planted, 65534, 65534);
  else await chmod(planted, 0o666);
  const st = await stat(planted, { bigint: true });
  const fake = await httpServer(t, (req, res) => {
    if (req.headers['x-damselfly-output'] === 'link') {
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'x-damselfly-output': 'link' });
      res.write(`${JSON.stringify({ file: planted, size: blob.length })}\n`);
      res.end(`${JSON.stringify({ done: true, path: planted, dev: String(st.dev), ino: String(st.ino), size: blob.length, mtimeNs: String(st.mtimeNs), verified: digest })}\n`);
    } else res.writeHead(200, { 'content-length': blob.length }).end(blob);
  });
  const out = join(dir, 'f');
  const r = await runDfget(['http://origin.invalid/f', '-O', out, '--daemon', fake.url, '--digest', digest, '--no-progress']);
  t.equal(r.code, 0, r.stderr);
  t.equal(fake.requests.length, 2, 'the link answer was given up and the bytes asked for');
  t.equal((await stat(out)).nlink, 1, 'the output is a file of its own, not the planted one');
  t.not((await stat(out)).ino, Number(st.ino));
  t.same(await readFile(out), blob);
});

t.test('a download that fails under a link answer is said in its last line: dfget reports it, and asks again only for a failure that may pass', async (t) => {
  // An origin whose bytes are not the digest asked for (one byte changed near the end), read by a dfdaemon with no
  // supernode: it fetches, finds the mismatch, and drops what it fetched.
  const blob = makeBlob(3 * MiB + 5, 307);
  const digest = sha(blob);
  const tampered = Buffer.from(blob);
  tampered[tampered.length - 100] ^= 1;
  let sent = 0;
  const origin = await httpServer(t, (req, res) => {
    const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '');
    const a = m ? Number(m[1]) : 0;
    const b = m && m[2] ? Math.min(Number(m[2]), tampered.length - 1) : tampered.length - 1;
    res.writeHead(m ? 206 : 200, { 'content-length': b - a + 1, ...(m ? { 'content-range': `bytes ${a}-${b}/${tampered.length}` } : {}), 'accept-ranges': 'bytes' });
    if (req.method !== 'HEAD') sent += b - a + 1;
    res.end(req.method === 'HEAD' ? undefined : tampered.subarray(a, b + 1));
  });
  const d = await startDaemon(t, []);
  const dir = await tempDir(t);
  const r = await runDfget([`${origin.url}/files/tool.tar`, '--digest', digest, '-O', join(dir, 'out'), '--daemon', d.proxyUrl, '--no-progress']);
  t.equal(r.code, 4, `a digest mismatch (${r.stderr.trim()})`);
  t.match(r.stderr, /found by the dfdaemon/, 'as the dfdaemon found it');
  t.equal(await answered(d, 'link'), 1, 'one link answer');
  t.equal(await answered(d, 'p2p') + (await answered(d, 'error')), 0, 'and no second request');
  // Asked again, a new run would have fetched the blob once more: every byte of it once is the origin's whole cost.
  t.ok(sent < tampered.length + MiB, `the origin sent ${sent} bytes for ${tampered.length} (its size probe's byte on top)`);
  t.ok(sent >= tampered.length - 100, 'the blob was read to its mismatch');
  t.same(await readdir(dir), [], 'no output file, no temporary file left');

  // What dfget does with each kind of failure, against an answer scripted as the dfdaemon's: one the dfdaemon says may
  // pass (a supernode's refusal, even a 4xx) gets the bytes asked for, as a cut transfer is resumed; one it says will
  // not is reported.
  for (const [status, code, again] of [[429, 'DF_SUPERNODE_ERROR', true], [502, 'DIGEST_MISMATCH', false]] as const) {
    const body = makeBlob(64 * 1024, 308);
    // A file dfget could link (its own, on the same filesystem), so the answer is followed to its last line.
    const held = join(dir, `held${status}`);
    await writeFile(held, body, { mode: 0o644 });
    const fake = await httpServer(t, (req, res) => {
      if (req.headers['x-damselfly-output'] === 'link') {
        res.writeHead(200, { 'content-type': 'application/x-ndjson', 'x-damselfly-output': 'link' });
        res.write(`${JSON.stringify({ file: held, size: body.length })}\n`);
        res.end(`${JSON.stringify({ error: { status, code, message: `scripted ${status}` }, again })}\n`);
      } else res.writeHead(200, { 'content-length': body.length }).end(body);
    });
    const out = join(dir, `f${status}`);
    const s = await runDfget(['http://origin.invalid/f', '-O', out, '--daemon', fake.url, '--no-progress']);
    t.equal(fake.requests.length, again ? 2 : 1, `${status}: ${again ? 'the bytes asked for' : 'not asked again'}`);
    if (again) {
      t.equal(s.code, 0, s.stderr);
      t.same(await readFile(out), body);
      t.equal((await stat(out)).nlink, 1, 'the bytes, not a link');
    } else {
      t.equal(s.code, 4, 'a digest mismatch');
      t.match(s.stderr, /scripted 502 \(found by the dfdaemon/, 'with the dfdaemon\'s own words');
      await t.rejects(stat(out), { code: 'ENOENT' });
    }
  }
});

t.test('one hand-out at a time, until its client closes the answer; the stamp outlives the output', async (t) => {
  const blob = makeBlob(6 * MiB + 7, 309);
  const { url } = await pushBlob(reg.url, 'link/release', blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const dir = await tempDir(t);
  const task = () => [...d.store.tasks()][0]!;
  const stamped = () => task().meta.handedOut !== undefined;
  /** A Range read through the mirror, which checks the stamp: its bytes must be the blob's. */
  const read = async (what: string) => {
    const r = await getViaProxy(d.proxyUrl, url, { range: 'bytes=0-99' });
    t.equal(r.status, 206, what);
    t.same(r.body, blob.subarray(0, 100), `${what}: the blob's bytes`);
  };

  const a = join(dir, 'a');
  const r = await runDfget([url, '-O', a, '--daemon', d.proxyUrl, '--no-progress']);
  t.equal(r.code, 0, r.stderr);
  t.ok(stamped(), 'linked: stamped');
  await rm(a);
  await read('after the output was deleted');
  t.ok(stamped(), 'the stamp stays: the file may still be open somewhere');

  // A client of its own, as dfget is, that links the file only when the test says.
  const linkAnswer = async () => {
    const { Client } = await import('undici');
    const c = new Client(d.proxyUrl);
    try {
      const res = await c.request({ method: 'GET', path: url, headers: { 'x-damselfly-output': 'link' } });
      if (res.headers['x-damselfly-output'] !== 'link') throw new Error('answered with the bytes');
      // Read with a listener, not `for await`: leaving that loop would destroy the body, which closes the answer.
      const path = await new Promise<string>((resolve, reject) => {
        let text = '';
        res.body.on('data', (chunk: Buffer) => {
          text += String(chunk);
          for (const l of text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { done?: boolean; path?: string; error?: { code: string }; again?: boolean })) {
            if (l.done) resolve(l.path!);
            if (l.error) reject(new Error(`said ${l.error.code}, again: ${l.again}`));
          }
        });
        res.body.once('end', () => reject(new Error(`no done line: ${text}`)));
        res.body.once('error', reject);
      });
      return { path, close: async () => (res.body.destroy(), await c.destroy()) };
    } catch (err) {
      await c.destroy();
      throw err;
    }
  };
  /** Until the dfdaemon has seen `n` link answers end (each one's client closed it): its hand-out is back. */
  const closed = (n: number) => until(`${n} link answers ended`, async () => (await answered(d, 'link', 200)) >= n);

  // Two clients asking at once: one is handed the file; the other gets the bytes, or, if both found it shareable, an
  // answer whose last line says it was not handed out and that the bytes are worth asking for (dfget then does). Two
  // outputs that were one file would change together, and neither has linked it yet.
  const both = await Promise.allSettled([linkAnswer(), linkAnswer()]);
  t.equal(both.filter((x) => x.status === 'fulfilled').length, 1, 'one hand-out at a time, even before it is linked');
  const lost = both.find((x) => x.status === 'rejected')!.reason as Error;
  t.match(lost.message, /^(answered with the bytes|said PIECE_MISSING, again: true)$/, `the other is told, not cut (${lost.message})`);
  const lent = both.find((x) => x.status === 'fulfilled')!.value;
  await read('while a client may be linking');
  const b = join(dir, 'b');
  const { link } = await import('node:fs/promises');
  await link(lent.path, b);
  await lent.close();
  await closed(2);
  await t.rejects(linkAnswer(), /answered with the bytes/, 'held by b: no hand-out');
  await rm(b);
  const next = await linkAnswer();
  t.ok(next.path, 'handed out again once the last client closed and its output went');
  await link(next.path, b);
  await next.close();
  await closed(3);
  await scribble(b);
  await read('after the holder changed its output');
  t.equal((await readFile(b))[0], 'X'.charCodeAt(0), 'the user\'s change stands');
});

t.test('dfget lets go of a hand-out as soon as its output is linked, before it reads the file back to hash it', async (t) => {
  const { FileSink } = await import('@damselfly/dfget/dist/file-sink.js');
  const { Scratch } = await import('@damselfly/dfget/dist/scratch.js');
  const dir = await tempDir(t);
  // The dfdaemon's file, as a hand-out names it (this user's, nobody else may write it).
  const cached = join(dir, 'cached');
  await writeFile(cached, makeBlob(3 * MiB, 310));
  await chmod(cached, 0o644);
  const st = await stat(cached, { bigint: true });
  const sink = await FileSink.open(join(dir, 'out'), new Scratch());
  const order: string[] = [];
  // No digest vouched for (as with --verify): the linked file is read back and hashed, which for a big blob takes
  // longer than the dfdaemon waits for the answer's close.
  const hooked = sink as unknown as { readBack: (length: number, take: (chunk: Buffer) => void) => Promise<void> };
  const readBack = hooked.readBack.bind(sink);
  hooked.readBack = (length, take) => (order.push('hashing'), readBack(length, take));
  const ok = await sink.link(cached, { dev: String(st.dev), ino: String(st.ino), size: Number(st.size), mtimeNs: String(st.mtimeNs) }, undefined, () => order.push('answer closed'));
  t.ok(ok, 'linked');
  t.same(order, ['answer closed', 'hashing'], 'the answer is closed first');
  t.equal((await stat(cached)).nlink, 2, 'the output holds the file by its second name');
  await sink.abort();
});
