/**
 * The dfget CLI's promises, each checked with the real binary: exit codes (0 ok, 2 bad arguments, 3 transfer failure,
 * 4 digest mismatch, 5 cannot write the output, 130/143 interrupted, 141 stdout closed by its reader), one line on
 * stderr naming the cause, and nothing left behind: no file at -O, no temporary file, no one-shot peer cache.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lutimes, mkdir, readFile, readdir, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { getViaProxy, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { serveFile, shapedOrigin, versionedOrigin } from './helpers/file-server.js';
import { httpServer, silent, trickle } from './helpers/broken-server.js';
import { mountTmpfs, tmpfsUnavailable } from './helpers/tmpfs.js';
import { DFGET, runDfget, spawnDfget, type DfgetResult } from './helpers/dfget-child.js';
import { until } from './helpers/until.js';
import { Scratch } from '@damselfly/dfget/dist/scratch.js';
import { sweepLeftovers } from '@damselfly/dfget/dist/leftovers.js';

const MiB = 1024 * 1024;
const WRONG = `sha256:${'1'.repeat(64)}`;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
/** The one-shot peer's caches for -O - (dfget-XXXXXX): in TMPDIR when set, else /var/tmp (see streamCacheParent). */
const peerCaches = async () => {
  const names: string[] = [];
  for (const dir of new Set([tmpdir(), '/var/tmp'])) names.push(...(await readdir(dir).catch(() => [])).filter((n) => n.startsWith('dfget-')).map((n) => join(dir, n)));
  return names.sort();
};

const reg = await startRegistry();
t.teardown(() => reg.stop());
const noTmpfs = tmpfsUnavailable();

/** The failure contract: this exit code, one `dfget: ` line matching `message`, and nothing left in `dir`. */
async function failed(t: Test, r: DfgetResult, code: number, message: RegExp, dir?: string, cachesBefore?: string[]): Promise<void> {
  t.equal(r.code, code, `exit ${code} (${r.stderr.trim()})`);
  t.match(r.stderr, message, 'the message names the cause');
  t.match(r.stderr, /^dfget: [^\n]+\n$/, 'exactly one line on stderr');
  if (dir) t.same(await readdir(dir), [], 'no file and no temporary file left');
  if (cachesBefore) t.same(await peerCaches(), cachesBefore, 'no one-shot peer cache left');
}

/** An origin whose object is version A for its first `switchAfter` requests and version B after (see versionedOrigin). */
async function changingOrigin(t: Test, size: number, switchAfter: number) {
  const versions = { A: makeBlob(size, 95), B: makeBlob(size, 96) };
  return { ...(await versionedOrigin(t, versions, (i) => (i > switchAfter ? 'B' : 'A'))), versions };
}

t.test('an object that changes at the origin mid-download (no digest to hold it to) is never stitched from two versions', async (t) => {
  const dir = await tempDir(t);
  // The probe and piece 0 see version A, every later piece version B.
  const origin = await changingOrigin(t, 4 * MiB, 2);
  const r = await runDfget([`${origin.url}/object`, '-O', join(dir, 'f'), '--standalone', '--no-progress']);
  await failed(t, r, 3, /changed at the origin/, dir);
  t.ok(origin.requests.slice(1).every((q) => q.headers['if-range'] === '"A"'), 'every piece was asked of version A, by its ETag');

  // Through a dfdaemon and its supernode: the client gets one version whole (the direct way, once P2P found the
  // object changed) or an error, never pieces of both.
  const changing = await changingOrigin(t, 4 * MiB, 3);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const got = await getViaProxy(d.proxyUrl, `${changing.url}/object`).catch(() => ({ status: 0, body: Buffer.alloc(0) }));
  const whole = got.body.equals(changing.versions.A) || got.body.equals(changing.versions.B);
  t.ok(got.status === 200 ? whole : got.status === 0 || got.status >= 400, `one version whole, or an error (status ${got.status}, ${got.body.length} bytes)`);
  t.ok(changing.requests.some((q) => q.headers['if-range'] === '"A"'), 'the supernode asked its pieces of the version it probed');
});

t.test('an origin without Range that drips the object: dfget standalone gives up at the minimum rate, no --timeout needed', async (t) => {
  const dir = await tempDir(t);
  const body = makeBlob(MiB, 97);
  const drips: NodeJS.Timeout[] = [];
  t.teardown(() => drips.forEach(clearInterval));
  const origin = await httpServer(t, (req, res) => {
    res.writeHead(200, { 'content-length': body.length });
    // The size probe gets it whole; the read drips 100 bytes every 200 ms, never stopping.
    if (req.headers.range === 'bytes=0-0') return void res.end(body);
    let at = 0;
    const drip = setInterval(() => res.write(body.subarray(at, (at += 100))), 200);
    drips.push(drip);
    res.on('close', () => clearInterval(drip));
  });
  const t0 = Date.now();
  const r = await runDfget([`${origin.url}/drip`, '-O', join(dir, 'f'), '--standalone', '--no-progress']);
  await failed(t, r, 3, /transfer too slow: .* B\/s after/, dir);
  t.ok(Date.now() - t0 < 30_000, `within the rate's grace and a check (${Date.now() - t0} ms)`);
});

t.test('user:password@ in the URL is Basic authentication, standalone and via the dfdaemon', async (t) => {
  const body = makeBlob(MiB + 3, 98);
  const expected = `Basic ${Buffer.from('alice:p@ss word').toString('base64')}`;
  const origin = await shapedOrigin(
    t,
    body,
    (_i, _range, res) => {
      if (res.req.headers.authorization === expected) return;
      res.writeHead(401, { 'www-authenticate': 'Basic realm="x"' }).end();
      return true;
    },
    '/private',
  );
  const url = origin.url.replace('http://', 'http://alice:p%40ss%20word@');
  // The same credential from a file (-H @file, as curl takes it): never on the command line.
  const headerFile = join(await tempDir(t), 'headers');
  await writeFile(headerFile, `Authorization: ${expected}\nX-Trace: 1\n`, { mode: 0o600 });
  const fromFile = join(await tempDir(t), 'c');
  const viaFile = await runDfget([origin.url, '-O', fromFile, '-H', `@${headerFile}`, '--standalone', '--no-progress']);
  t.equal(viaFile.code, 0, viaFile.stderr);
  t.ok((await readFile(fromFile)).equals(body), '-H @file: the header came from the file');
  const dir = await tempDir(t);
  const alone = await runDfget([url, '-O', join(dir, 'a'), '--standalone', '--no-progress']);
  t.equal(alone.code, 0, alone.stderr);
  t.ok((await readFile(join(dir, 'a'))).equals(body), 'standalone: the origin took the credentials');
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const via = await runDfget([url, '-O', join(dir, 'b'), '--daemon', d.proxyUrl, '--no-progress']);
  t.equal(via.code, 0, via.stderr);
  t.ok((await readFile(join(dir, 'b'))).equals(body), 'via the dfdaemon too');
  t.notOk(`${alone.stderr}${via.stderr}`.includes('p@ss'), 'the password is printed nowhere');
});

t.test('a long output name works; -O <file> needs no TMPDIR, and a TMPDIR that cannot hold -O -\'s cache is exit 3 naming it', async (t) => {
  const blob = makeBlob(300 * 1024, 99);
  const origin = await serveFile(t, blob, '/long');
  const dir = await tempDir(t);
  const long = join(dir, `${'n'.repeat(200)}é${'n'.repeat(40)}.bin`);
  const r = await runDfget([origin, '-O', long, '--standalone', '--no-progress']);
  t.equal(r.code, 0, r.stderr);
  t.ok((await readFile(long)).equals(blob), 'a 242-character name gets its file');
  t.same(await readdir(dir), [`${'n'.repeat(200)}é${'n'.repeat(40)}.bin`], 'and no temporary file is left');
  // The one-shot cache of a file output lives beside it and becomes it: TMPDIR is not used.
  const noTmp = { TMPDIR: join(dir, 'missing') };
  const beside = await runDfget([origin, '-O', join(dir, 'x'), '--standalone', '--no-progress'], { env: noTmp });
  t.equal(beside.code, 0, beside.stderr);
  t.ok((await readFile(join(dir, 'x'))).equals(blob), 'a file output without a usable TMPDIR');
  t.same((await readdir(dir)).sort(), [`${'n'.repeat(200)}é${'n'.repeat(40)}.bin`, 'x'], 'and its cache directory is gone');
  const broken = await runDfget([origin, '-O', '-', '--standalone', '--no-progress'], { env: noTmp });
  t.equal(broken.code, 3, broken.stderr);
  t.match(broken.stderr, /cache in .*missing cannot be made \(set TMPDIR elsewhere\)/);
  t.equal(broken.stdout.length, 0, 'nothing on stdout');
});

t.test('standalone to a file: its one-shot cache beside the output becomes it, with or without a digest, --verify, empty', async (t) => {
  const dir = await tempDir(t);
  const blob = makeBlob(3 * MiB + 7, 41);
  const origin = await serveFile(t, blob, '/moved');
  const empty = await serveFile(t, Buffer.alloc(0), '/empty');
  const cases: [string, string[], Buffer][] = [
    ['plain', [origin], blob],
    ['digest', [origin, '--digest', sha(blob)], blob],
    ['verify', [origin, '--digest', sha(blob), '--verify'], blob],
    ['empty', [empty], Buffer.alloc(0)],
  ];
  for (const [name, args, body] of cases) {
    const r = await runDfget([...args, '-O', join(dir, name), '--standalone', '--no-progress']);
    t.equal(r.code, 0, `${name}: ${r.stderr}`);
    t.ok((await readFile(join(dir, name))).equals(body), `${name}: the whole body`);
    // Without a digest the file is read back to name its sha256; with one, the engine's check is the answer.
    t.match(r.stderr, new RegExp(`${body.length} bytes ${sha(body)} \\(standalone\\)`), `${name}: its sha256 printed`);
  }
  t.same((await readdir(dir)).sort(), cases.map(([n]) => n).sort(), 'no cache directory or temporary file left beside them');
});

t.test('standalone with its log on (DAMSELFLY_LOG_LEVEL): the log goes to stderr, -O - carries the blob and nothing else', async (t) => {
  const blob = makeBlob(2 * MiB + 5, 91);
  const origin = await serveFile(t, blob, '/logged');
  const r = await runDfget([origin, '-O', '-', '--standalone', '--no-progress'], { env: { DAMSELFLY_LOG_LEVEL: 'debug' } });
  t.equal(r.code, 0, r.stderr.slice(-300));
  t.ok(r.stdout.equals(blob), `stdout is the blob, byte for byte (${r.stdout.length} of ${blob.length} bytes)`);
  t.match(r.stderr, /"name":"dfget"/, 'the log lines went to stderr');
});

t.test('a read-only output directory: exit 5 with the cause, before anything is fetched', { skip: noTmpfs ?? false }, async (t) => {
  // Tests run as root, which ignores directory permissions: a read-only mount is what refuses root too.
  const dir = await mountTmpfs(t, 'size=1m,ro');
  const origin = await httpServer(t, (_req, res) => res.end('hello'));
  const daemon = await httpServer(t, (_req, res) => res.end('hello'));
  const alone = await runDfget([`${origin.url}/f`, '-O', join(dir, 'f'), '--standalone', '--no-progress']);
  await failed(t, alone, 5, /cannot write output: .*read-only file system/i, dir);
  const via = await runDfget([`${origin.url}/f`, '-O', join(dir, 'f'), '--daemon', daemon.url, '--no-progress']);
  await failed(t, via, 5, /cannot write output: .*read-only file system/i, dir);
  t.equal(origin.requests.length + daemon.requests.length, 0, 'nothing was fetched');
});

t.test('a full disk, standalone: exit 5 "no space left", no file, no temporary file', { skip: noTmpfs ?? false }, async (t) => {
  const dir = await mountTmpfs(t, 'size=2m');
  const { url } = await pushBlob(reg.url, 'cli/full', makeBlob(10 * MiB, 31));
  const before = await peerCaches();
  const r = await runDfget([url, '-O', join(dir, 'f'), '--standalone', '--no-progress']);
  await failed(t, r, 5, /cannot write output: .*no space left on device/i, dir, before);
});

t.test('a full disk, via the dfdaemon: exit 5 naming the disk, not "failed verification"', { skip: noTmpfs ?? false }, async (t) => {
  const dir = await mountTmpfs(t, 'size=2m');
  const { url } = await pushBlob(reg.url, 'cli/full', makeBlob(10 * MiB, 32));
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const r = await runDfget([url, '-O', join(dir, 'f'), '--daemon', d.proxyUrl, '--no-progress']);
  await failed(t, r, 5, /cannot write output: .*no space left on device/i, dir);
  t.notMatch(r.stderr, /verification|dfdaemon/, 'the user\'s disk, not the daemon, is named');
});

t.test('a wrong --digest: exit 4 "digest mismatch" via the dfdaemon, standalone, and from any daemon answer', async (t) => {
  const dir = await tempDir(t);
  const out = join(dir, 'f');
  const blob = makeBlob(6 * MiB, 33);
  const files = await serveFile(t, blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const before = await peerCaches();

  const via = await runDfget([files, '-O', out, '--daemon', d.proxyUrl, '--digest', WRONG, '--no-progress']);
  await failed(t, via, 4, /digest mismatch/, dir);
  const alone = await runDfget([files, '-O', out, '--standalone', '--supernode', sn.url, '--digest', `sha256:${'2'.repeat(64)}`, '--no-progress']);
  await failed(t, alone, 4, /digest mismatch/, dir, before);
  const origin = await runDfget([files, '-O', out, '--standalone', '--digest', `sha256:${'3'.repeat(64)}`, '--no-progress']);
  await failed(t, origin, 4, /digest mismatch/, dir, before);

  // A daemon's JSON error is data: its code says digest mismatch, before the first byte...
  const json = await httpServer(t, (_req, res) =>
    res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'DIGEST_MISMATCH', message: 'digest mismatch: blob is sha256:ab, expected sha256:11' })),
  );
  await failed(t, await runDfget([files, '-O', out, '--daemon', json.url, '--digest', WRONG, '--no-progress']), 4, /digest mismatch: blob is sha256:ab/, dir);
  // ...or it cuts the connection mid-body, and says why when asked for the rest.
  const cutter = await httpServer(t, (_req, res, n) => {
    if (n === 1) {
      res.writeHead(200, { 'content-length': 1000 });
      res.write(Buffer.alloc(100, 1), () => setTimeout(() => res.destroy(), 50));
    } else {
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ code: 'DIGEST_MISMATCH', message: "supernode refused: SN_DIGEST_MISMATCH: digest mismatch: the origin's bytes are not sha256:11" }));
    }
  });
  const cut = await runDfget([files, '-O', out, '--daemon', cutter.url, '--digest', WRONG, '--no-progress']);
  await failed(t, cut, 4, /digest mismatch: .*cut the transfer after 100 of 1000 bytes.*SN_DIGEST_MISMATCH/, dir);
  t.equal(cutter.requests[1]?.headers.range, 'bytes=100-', 'asked for the rest');
  // The message is shown, not read: another code whose words mention a digest mismatch is a failed transfer.
  const wordy = await httpServer(t, (_req, res) =>
    res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'DF_SUPERNODE_ERROR', message: 'supernode refused: SN_BUSY: no digest mismatch here' })),
  );
  await failed(t, await runDfget([files, '-O', out, '--daemon', wordy.url, '--no-progress']), 3, /DF_SUPERNODE_ERROR: supernode refused: SN_BUSY/, dir);
});

t.test('a failure on the dfdaemon side is exit 3, its own full disk included; a cut transfer is resumed once', async (t) => {
  const dir = await tempDir(t);
  const out = join(dir, 'f');
  const body = makeBlob(1000, 34);
  const url = 'http://origin.invalid/files/f';
  const full = await httpServer(t, (_req, res) =>
    res.writeHead(507, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'DF_DISK_FULL', message: 'disk full: /var/lib/damselfly/tasks/x.data' })),
  );
  const r507 = await runDfget([url, '-O', out, '--daemon', full.url, '--no-progress']);
  await failed(t, r507, 3, /507 DF_DISK_FULL: disk full: .*the dfdaemon's own disk/, dir);

  const cutTwice = await httpServer(t, (_req, res, n) => {
    res.writeHead(n === 1 ? 200 : 206, { 'content-length': n === 1 ? 1000 : 900, ...(n > 1 ? { 'content-range': 'bytes 100-999/1000' } : {}) });
    res.write(body.subarray(n === 1 ? 0 : 100, n === 1 ? 100 : 200), () => setTimeout(() => res.destroy(), 50));
  });
  await failed(t, await runDfget([url, '-O', out, '--daemon', cutTwice.url, '--no-progress']), 3, /cut the transfer after 200 of 1000 bytes, twice/, dir);

  const cutOnce = await httpServer(t, (req, res, n) => {
    if (n === 1) {
      res.writeHead(200, { 'content-length': 1000 });
      res.write(body.subarray(0, 100), () => setTimeout(() => res.destroy(), 50));
    } else {
      t.equal(req.headers.range, 'bytes=100-');
      res.writeHead(206, { 'content-length': 900, 'content-range': 'bytes 100-999/1000' }).end(body.subarray(100));
    }
  });
  const resumed = await runDfget([url, '-O', out, '--daemon', cutOnce.url, '--digest', sha(body), '--no-progress']);
  t.equal(resumed.code, 0, resumed.stderr);
  t.same(await readFile(out), body, 'resumed from where it was cut, verified whole');

  // The upstream's own answer passed through by a real daemon (a registry 404) is a transfer failure too.
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const missing = await runDfget([`${reg.url}/v2/cli/none/blobs/sha256:${'0'.repeat(64)}`, '-O', join(dir, 'g'), '--daemon', d.proxyUrl, '--no-progress']);
  t.equal(missing.code, 3, missing.stderr);
  t.match(missing.stderr, /404/);
});

t.test('a --digest contradicting the URL is a conflict (exit 2), not "malformed"', async (t) => {
  const dir = await tempDir(t);
  const url = `${reg.url}/v2/cli/c/blobs/sha256:${'2'.repeat(64)}`;
  for (const mode of [['--standalone'], ['--daemon', 'http://127.0.0.1:1']]) {
    const r = await runDfget([url, '-O', join(dir, 'f'), '--digest', WRONG, ...mode]);
    await failed(t, r, 2, /--digest sha256:1{64} conflicts with the URL's sha256:2{64}/, dir);
    t.notMatch(r.stderr, /malformed/);
  }
});

t.test('connection refused everywhere (no daemon, no supernode, origin down): exit 3 naming the host', async (t) => {
  const dir = await tempDir(t);
  const [origin, daemon, supernode] = [await freePort(), await freePort(), await freePort()];
  const before = await peerCaches();
  const url = `http://127.0.0.1:${origin}/files/f`;
  const all = await runDfget([url, '-O', join(dir, 'f'), '--daemon', `http://127.0.0.1:${daemon}`, '--supernode', `http://127.0.0.1:${supernode}`, '--no-progress']);
  await failed(t, all, 3, new RegExp(`unreachable.*127\\.0\\.0\\.1:${origin}.*ECONNREFUSED`), dir, before);
  const alone = await runDfget([url, '-O', join(dir, 'f'), '--standalone', '--no-progress']);
  await failed(t, alone, 3, new RegExp(`127\\.0\\.0\\.1:${origin}.*ECONNREFUSED`), dir, before);
});

t.test('bad arguments: exit 2 with every problem listed; --help and --version exit 0', async (t) => {
  const dir = await tempDir(t);
  await failed(t, await runDfget([]), 2, /missing <url>.*missing -O <file>/);
  await failed(t, await runDfget(['http://x/f', '-O', join(dir, 'f'), '--bogus']), 2, /unknown option "--bogus"/, dir);
  await failed(t, await runDfget(['http://x/f', '-O']), 2, /-O, --output <file>' argument missing/);
  const many = await runDfget(['ht!tp://x', 'extra', '-O', join(dir, 'f'), '--timeout', 'soon', '-H', 'nocolon', '--digest', 'md5:x', '--frobnicate']);
  await failed(t, many, 2, /unknown option "--frobnicate".*unexpected argument \(#2 of 2.*malformed URL.*malformed digest.*--header #1 must look like.*--timeout must be seconds/, dir);
  // A URL that does not parse, a mistyped option and its value, a stray word: none of them is printed with what may
  // be a credential in it.
  const leaky = await runDfget(['http://user:PW-SECRET@host:99999/x?token=TOKEN-SECRET', '-O', join(dir, 'f'), '--headr', 'Authorization: Bearer HDR-SECRET', '--digst=sha256:DIGEST-SECRET']);
  await failed(t, leaky, 2, /unknown option "--headr".*unknown option "--digst".*unexpected argument \(#2 of 2.*malformed URL: "http:\/\/…@host:99999\/x\?…"/, dir);
  for (const secret of ['PW-SECRET', 'TOKEN-SECRET', 'HDR-SECRET', 'DIGEST-SECRET']) t.notOk(leaky.stderr.toString().includes(secret), `${secret} is not printed`);
  // A malformed header is often a credential missing its colon: never echoed. A bad name or a value with a newline is
  // a usage error too (it used to reach the HTTP client and be blamed on the dfdaemon, exit 3).
  const secretive = await runDfget(['http://x/f', '-O', join(dir, 'f'), '-H', 'Authorization Bearer SECRET-TOKEN', '-H', 'Bad Name: v', '-H', 'X-Ok: a\nb']);
  await failed(t, secretive, 2, /--header #1 must look like.*--header #2 must look like.*--header X-Ok: its value holds a control character/, dir);
  t.notOk(secretive.stderr.toString().includes('SECRET-TOKEN'), 'the malformed header is not printed');
  // A --timeout longer than a timer holds would fire at once.
  await failed(t, await runDfget(['http://x/f', '-O', join(dir, 'f'), '--timeout', '3000000']), 2, /--timeout must be at most 2147483 s/, dir);
  const help = await runDfget(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout.toString(), /Usage: dfget <url> -O <file\|->/);
  const version = await runDfget(['--version']);
  t.equal(version.code, 0);
  t.match(version.stdout.toString(), /^\d+\.\d+\.\d+\n$/);
});

t.test('SIGINT exits 130, SIGTERM 143 and SIGHUP 129, with the temporary file and peer cache removed', async (t) => {
  const before = await peerCaches();
  const interrupt = async (signal: NodeJS.Signals, viaDaemon: boolean) => {
    const dir = await tempDir(t);
    const server = await httpServer(t, trickle(1000));
    const mode = viaDaemon ? ['--daemon', server.url] : ['--standalone'];
    const { child, done } = spawnDfget([`${viaDaemon ? 'http://origin.invalid' : server.url}/f`, '-O', join(dir, 'f'), '--no-progress', ...mode]);
    // Mid-download: the temporary file exists and the server is sending.
    for (let i = 0; i < 100 && !((await readdir(dir)).length && server.requests.length); i++) await sleep(50);
    await sleep(300);
    child.kill(signal);
    return { r: await done, dir };
  };
  const [int, term, intDaemon, hup] = await Promise.all([interrupt('SIGINT', false), interrupt('SIGTERM', false), interrupt('SIGINT', true), interrupt('SIGHUP', false)]);
  await failed(t, int.r, 130, /interrupted \(SIGINT\)/, int.dir);
  await failed(t, term.r, 143, /interrupted \(SIGTERM\)/, term.dir);
  await failed(t, intDaemon.r, 130, /interrupted \(SIGINT\)/, intDaemon.dir);
  // The terminal or the ssh session going away: the same clean end.
  await failed(t, hup.r, 129, /hung up \(SIGHUP\)/, hup.dir);
  t.same(await peerCaches(), before, 'no one-shot peer cache left');
});

t.test('a SIGKILLed run\'s hidden files beside -O are removed by a later run into that directory once stale; a live run\'s stay', async (t) => {
  const dir = await tempDir(t);
  const server = await httpServer(t, trickle(1000));
  const running = async (name: string) => {
    const before = new Set(await readdir(dir));
    const run = spawnDfget([`${server.url}/${name}`, '-O', join(dir, name), '--no-progress', '--standalone']);
    // Mid-download: its temporary file and its one-shot cache exist beside the output.
    const mine = async () => (await readdir(dir)).filter((n) => !before.has(n));
    for (let i = 0; i < 100 && (await mine()).length < 2; i++) await sleep(50);
    return { ...run, mine };
  };
  const killed = await running('f');
  const left = await killed.mine();
  killed.child.kill('SIGKILL');
  await killed.done;
  t.equal(left.length, 2, `a SIGKILLed run leaves its temporary file and its cache directory (${left.join(', ')})`);
  t.ok(left.some((n) => n.startsWith('.dfget-cache-')) && left.some((n) => /^\.f\.dfget-\d+-[0-9a-f]{12}\.tmp$/.test(n)), 'named as the sweep knows them');
  t.same((await readdir(dir)).sort(), left.sort(), 'nothing else');
  // Eleven minutes without a touch: a dead run's. Look-alikes stay whatever their age: not dfget's names, a symlink,
  // a directory with a user's things in it, one named as dfget once named its caches; and a fresh one (as a live
  // run's are: its heartbeat keeps them so, tested below).
  const old = new Date(Date.now() - 11 * 60_000);
  for (const n of left) await utimes(join(dir, n), old, old);
  await writeFile(join(dir, '.dfget-notes.txt'), 'mine');
  await writeFile(join(dir, 'target'), 'keep');
  await symlink(join(dir, 'target'), join(dir, '.x.dfget-1-aaaaaaaaaaaa.tmp'));
  await mkdir(join(dir, '.dfget-cache-fresh1'));
  await mkdir(join(dir, '.dfget-cache-user01', 'photos'), { recursive: true });
  await mkdir(join(dir, '.dfget-backup'));
  for (const n of ['.dfget-notes.txt', 'target', '.dfget-cache-user01', '.dfget-backup']) await utimes(join(dir, n), old, old);
  await lutimes(join(dir, '.x.dfget-1-aaaaaaaaaaaa.tmp'), old, old);
  const live = await running('g');
  const blob = makeBlob(MiB, 41);
  const ref = await pushBlob(reg.url, 'team/sweep', blob);
  const r = await runDfget([ref.url, '-O', join(dir, 'h'), '--no-progress', '--standalone']);
  t.equal(r.code, 0, r.stderr);
  const now = await readdir(dir);
  for (const n of left) t.notOk(now.includes(n), `${n} (a dead run's) was removed`);
  const liveFiles = (await live.mine()).filter((n) => n !== 'h');
  t.equal(liveFiles.length, 2, `the live run has both of its files (${liveFiles.join(', ')})`);
  const stay = ['.dfget-notes.txt', 'target', '.x.dfget-1-aaaaaaaaaaaa.tmp', '.dfget-cache-fresh1', '.dfget-cache-user01', '.dfget-backup', 'h', ...liveFiles];
  for (const n of stay) t.ok(now.includes(n), `${n} stays`);
  live.child.kill('SIGTERM');
  t.equal((await live.done).code, 143);
});

t.test('a live run touches its files (the heartbeat), so no later run takes them for a dead one\'s; not once it ended', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, '.f.dfget-1-aaaaaaaaaaaa.tmp');
  await writeFile(path, '');
  const scratch = new Scratch({ heartbeatMs: 50 });
  scratch.add(path);
  const old = new Date(Date.now() - 11 * 60_000);
  await utimes(path, old, old);
  await sleep(300);
  t.ok(Date.now() - (await stat(path)).mtimeMs < 60_000, 'touched while the run lives');
  t.same(await sweepLeftovers(dir), [], 'so a sweep leaves it');
  scratch.dispose();
  await utimes(path, old, old);
  await sleep(300);
  t.same(await sweepLeftovers(dir), ['.f.dfget-1-aaaaaaaaaaaa.tmp'], 'untouched once the run ended: a sweep takes it');
});

t.test('-O - streams the verified body to stdout, binary-safe, and writes no file', async (t) => {
  const dir = await tempDir(t);
  const blob = makeBlob(6 * MiB, 35);
  const { url } = await pushBlob(reg.url, 'cli/stdout', blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  for (const mode of [['--daemon', d.proxyUrl], ['--standalone']]) {
    const r = await runDfget([url, '-O', '-', '--no-progress', ...mode], { cwd: dir });
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout.length, blob.length);
    t.ok(r.stdout.equals(blob), `stdout is the blob, byte for byte (${mode[0]})`);
    t.same(await readdir(dir), [], 'no file named "-" (nor any other)');
  }
});

t.test('-O - standalone keeps its one-shot cache in /var/tmp (on disk), not /tmp (often memory), unless TMPDIR says where', async (t) => {
  const server = await httpServer(t, trickle(1000));
  const before = await peerCaches();
  const { child, done } = spawnDfget([`${server.url}/f`, '-O', '-', '--no-progress', '--standalone'], { env: { TMPDIR: undefined } });
  const made = await until('the cache to be made', async () => {
    const now = (await peerCaches()).filter((n) => !before.includes(n));
    return now.length ? now : undefined;
  }, 10_000, 50);
  t.match(made, [/^\/var\/tmp\/dfget-/], `in /var/tmp (${made.join(', ')})`);
  child.kill('SIGTERM');
  t.equal((await done).code, 143);
  t.same(await peerCaches(), before, 'and removed at the end');
  const dir = await tempDir(t);
  const { child: other, done: otherDone } = spawnDfget([`${server.url}/g`, '-O', '-', '--no-progress', '--standalone'], { env: { TMPDIR: dir } });
  await until('the cache in TMPDIR', async () => (await readdir(dir)).some((n) => n.startsWith('dfget-')), 10_000, 50);
  other.kill('SIGTERM');
  t.equal((await otherDone).code, 143);
  t.same(await readdir(dir), [], 'a TMPDIR set is where it goes, and it is removed from there too');
});

t.test('-O - with a wrong digest: exit 4, saying the bytes already on stdout cannot be taken back', async (t) => {
  const dir = await tempDir(t);
  const files = await serveFile(t, makeBlob(9 * MiB, 36));
  const r = await runDfget([files, '-O', '-', '--standalone', '--digest', WRONG, '--no-progress'], { cwd: dir });
  await failed(t, r, 4, /digest mismatch/, dir);
  t.ok(r.stdout.length > 0, 'the verified pieces before the last went out as they came');
  t.match(r.stderr, new RegExp(`${r.stdout.length} bytes already went to stdout and cannot be taken back`));
});

t.test('-O - into a reader that stops early (| head -c 10): exit 141, quietly', async (t) => {
  const files = await serveFile(t, makeBlob(8 * MiB, 37));
  const dir = await tempDir(t);
  // A real shell pipeline; the exit status is dfget's own (PIPESTATUS[0]).
  const sh = spawn('bash', ['-c', 'node "$0" "$@" | head -c 10 > "$OUT"; exit ${PIPESTATUS[0]}', DFGET, files, '-O', '-', '--standalone', '--no-progress'], {
    env: { ...process.env, OUT: join(dir, 'head') },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  sh.stderr.on('data', (c) => (stderr += c));
  const code = await new Promise<number | null>((r) => sh.on('close', r));
  t.equal(code, 141, `exit 141 (${stderr.trim()})`);
  t.equal(stderr, '', 'nothing on stderr');
  t.equal((await readFile(join(dir, 'head'))).length, 10);
});

t.test('--timeout holds against a trickling or silent origin and dfdaemon: exit 3 "timed out after S s" on time', async (t) => {
  const S = 2;
  const trickler = await httpServer(t, trickle(1000));
  const mute = await httpServer(t, silent);
  const before = await peerCaches();
  const cases: [string, string[]][] = [
    ['origin trickles 1 B/s', [`${trickler.url}/f`, '--standalone']],
    ['origin never answers', [`${mute.url}/f`, '--standalone']],
    ['dfdaemon trickles 1 B/s', ['http://origin.invalid/f', '--daemon', trickler.url]],
    ['dfdaemon never answers', ['http://origin.invalid/f', '--daemon', mute.url]],
  ];
  // Two at a time: the bound is S + 2.5 s from spawn to exit, and this machine has two cores.
  const results: { name: string; dir: string; r: DfgetResult }[] = [];
  for (let i = 0; i < cases.length; i += 2) {
    results.push(
      ...(await Promise.all(
        cases.slice(i, i + 2).map(async ([name, [url, ...mode]]) => {
          const dir = await tempDir(t);
          return { name, dir, r: await runDfget([url!, '-O', join(dir, 'f'), '--timeout', String(S), '--no-progress', ...mode]) };
        }),
      )),
    );
  }
  for (const { name, dir, r } of results) {
    await failed(t, r, 3, new RegExp(`timed out after ${S} s`), dir);
    // The upper bound leaves room for two Node start-ups on two busy cores: it tells a timeout kept from one that was not.
    t.ok(r.ms >= (S - 0.1) * 1000 && r.ms < (S + 2.5) * 1000, `${name}: ended after ${Math.round(r.ms)} ms`);
  }
  t.same(await peerCaches(), before, 'no one-shot peer cache left');
});

t.test('DFGET_DAEMON names the dfdaemon, --daemon wins over it; --help shows the defaults', async (t) => {
  const dir = await tempDir(t);
  const body = makeBlob(1000, 38);
  const serve = () => httpServer(t, (_req, res) => res.writeHead(200, { 'content-length': body.length }).end(body));
  const [fromEnv, fromFlag] = [await serve(), await serve()];
  const url = 'http://origin.invalid/files/f';
  const env = await runDfget([url, '-O', join(dir, 'a'), '--no-progress'], { env: { DFGET_DAEMON: fromEnv.url } });
  t.equal(env.code, 0, env.stderr);
  t.equal(fromEnv.requests.length, 1, 'the daemon in DFGET_DAEMON was used');
  t.equal(fromEnv.requests[0]?.url, url, 'asked as a forward proxy');
  const flag = await runDfget([url, '-O', join(dir, 'b'), '--daemon', fromFlag.url, '--no-progress'], { env: { DFGET_DAEMON: fromEnv.url } });
  t.equal(flag.code, 0, flag.stderr);
  t.equal(fromFlag.requests.length, 1, '--daemon wins');
  t.equal(fromEnv.requests.length, 1);
  t.same(await readFile(join(dir, 'b')), body);
  const bad = await runDfget([url, '-O', join(dir, 'c')], { env: { DFGET_DAEMON: 'not a url' } });
  await failed(t, bad, 2, /\$DFGET_DAEMON: malformed URL/);
  const help = (await runDfget(['--help'])).stdout.toString().replace(/\s+/g, ' ');
  t.match(help, /--daemon <url> local dfdaemon proxy \(default: "http:\/\/127\.0\.0\.1:65001", env: DFGET_DAEMON\)/);
  t.match(help, /--timeout <seconds> .*\(default: 0 = never\)/);
});
