/**
 * dfdaemon as the registry mirror real clients use: skopeo through registries.conf, a private registry with
 * htpasswd auth, Range semantics, the open-proxy guard, and registry redirects.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import bcrypt from 'bcryptjs';
import { request } from 'undici';
import { createLogger } from '@damselfly/shared';
import { Supernode, loadSupernodeConfig } from '@damselfly/supernode';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { TEST_ORIGINS, TEST_SECRET, getViaProxy, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { metricValue } from './helpers/metrics.js';
import { buildAndPushImage, mirrorConf, skopeo } from './helpers/image.js';
import { dfget } from './helpers/dfget.js';
import { until } from './helpers/until.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const hostOf = (u: string) => new URL(u).host;

t.test('skopeo pulls a multi-layer image through the dfdaemon mirror: blobs go P2P, the registry serves them once', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const dir = await tempDir(t);
  const image = await buildAndPushImage(dir, reg.host, 'apps/web', [3 * MiB, 5 * MiB + 17, 2 * MiB]);
  const sn = await startSupernode(t);
  const daemons = await Promise.all([0, 1].map(() => startDaemon(t, [sn.url], { registries: [reg.url], proxyHosts: [] })));
  for (const [i, d] of daemons.entries()) {
    const conf = await mirrorConf(dir, reg.host, hostOf(d.proxyUrl));
    const out = join(dir, `pulled${i}`);
    const r = await skopeo(['--registries-conf', conf, 'copy', '--src-tls-verify=false', `docker://${image.ref}`, `dir:${out}`]);
    t.equal(r.code, 0, `skopeo through dfdaemon ${i} (${r.stderr.slice(-300)})`);
    const files = await readdir(out);
    for (const b of image.blobs) {
      t.ok(files.includes(b.digest.slice(7)), `blob ${b.digest.slice(7, 19)} pulled`);
      t.equal(sha(await readFile(join(out, b.digest.slice(7)))), b.digest);
    }
    t.ok((await metricValue(d.metrics.registry, 'damselfly_dfdaemon_proxy_requests_total', { kind: 'p2p' })) >= image.blobs.length, 'blobs went P2P');
    t.ok((await metricValue(d.metrics.registry, 'damselfly_dfdaemon_proxy_requests_total', { kind: 'direct' })) >= 1, 'manifests went straight through');
  }
  const total = image.blobs.reduce((s, b) => s + b.size, 0);
  const served = await reg.settledBytesServed(image.blobs.map((b) => b.digest));
  t.comment(`registry served ${served} blob bytes for ${total} bytes of blobs pulled by 2 nodes`);
  t.ok(served <= total, 'each blob left the registry once (the size probe brings its first block)');
});

t.test('private registry (htpasswd): the auth challenge passes through, credentials reach the seeder, never the logs', async (t) => {
  const hash = bcrypt.hashSync('s3cret-pass', 10);
  const reg = await startRegistry({ htpasswd: `alice:${hash}\n` });
  t.teardown(() => reg.stop());
  const dir = await tempDir(t);
  const image = await buildAndPushImage(dir, reg.host, 'private/app', [4 * MiB], 'alice:s3cret-pass');
  let logged = '';
  const sink = new Writable({ write: (c, _e, cb) => ((logged += c), cb()) });
  const dataDir = await tempDir(t);
  const sn = new Supernode(loadSupernodeConfig({ flags: { host: '127.0.0.1', port: 0, dataDir, logLevel: 'trace', clusterSecret: TEST_SECRET, ...TEST_ORIGINS } }), { log: createLogger('supernode', 'trace', sink) });
  await sn.start();
  t.teardown(() => sn.stop());
  // The dfdaemon, which has the client's Authorization header in hand, logs at trace level into a buffer too.
  let loggedDf = '';
  const dfSink = new Writable({ write: (c, _e, cb) => ((loggedDf += c), cb()) });
  const d = await startDaemon(t, [sn.url], { registries: [reg.url], proxyHosts: [], logLevel: 'trace' }, { log: createLogger('dfdaemon', 'trace', dfSink) });
  const conf = await mirrorConf(dir, reg.host, hostOf(d.proxyUrl));

  // The challenge reaches the client unchanged through the mirror.
  const challenge = await getViaProxy(d.proxyUrl, `/v2/private/app/blobs/${image.blobs[0]!.digest}`);
  t.equal(challenge.status, 401);
  t.match(String(challenge.headers['www-authenticate']), /Basic realm="damselfly-test"/);

  const denied = await skopeo(['--registries-conf', conf, 'copy', '--src-tls-verify=false', '--src-creds', 'alice:wrong', `docker://${image.ref}`, `dir:${join(dir, 'x')}`]);
  t.not(denied.code, 0, 'wrong password is refused');
  t.match(denied.stderr, /unauthorized|authentication required|401/i);

  // As after `skopeo login` to the registry and to the mirror: c/image sends a mirror the mirror host's credentials.
  const auth = Buffer.from('alice:s3cret-pass').toString('base64');
  const authfile = join(dir, 'auth.json');
  await writeFile(authfile, JSON.stringify({ auths: { [reg.host]: { auth }, [hostOf(d.proxyUrl)]: { auth } } }));
  const ok = await skopeo(['--registries-conf', conf, 'copy', '--src-tls-verify=false', '--src-authfile', authfile, `docker://${image.ref}`, `dir:${join(dir, 'y')}`]);
  t.equal(ok.code, 0, ok.stderr.slice(-300));
  for (const b of image.blobs) t.equal(sha(await readFile(join(dir, 'y', b.digest.slice(7)))), b.digest);
  t.ok((await metricValue(d.metrics.registry, 'damselfly_dfdaemon_proxy_requests_total', { kind: 'p2p' })) >= 1, 'blobs went P2P with credentials');
  t.ok(await metricValue(sn.metrics.registry, 'damselfly_supernode_origin_bytes_total') > 0, 'the supernode seeded with them');
  const b64 = Buffer.from('alice:s3cret-pass').toString('base64');
  t.notOk(logged.includes('s3cret') || logged.includes(b64), 'no credential in the supernode log');
  t.ok(loggedDf.length > 0, 'the dfdaemon logged');
  t.notOk(loggedDf.includes('s3cret') || loggedDf.includes(b64), 'no credential in the dfdaemon log');
});

t.test('Range: 206 + Content-Range, suffix and open ranges, 416 past the end, 400 for several ranges', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(10 * MiB + 5, 31);
  const { url } = await pushBlob(reg.url, 'team/range', blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url]);
  const cases: [string, number, number][] = [
    ['bytes=0-99', 0, 99],
    [`bytes=${4 * MiB - 10}-${4 * MiB + 10}`, 4 * MiB - 10, 4 * MiB + 10],
    ['bytes=-7', blob.length - 7, blob.length - 1],
    [`bytes=${10 * MiB}-`, 10 * MiB, blob.length - 1],
    [`bytes=${blob.length - 2}-${blob.length + 100}`, blob.length - 2, blob.length - 1],
  ];
  for (const [h, a, b] of cases) {
    const r = await getViaProxy(d.proxyUrl, url, { range: h });
    t.equal(r.status, 206, h);
    t.equal(r.headers['content-range'], `bytes ${a}-${b}/${blob.length}`);
    t.ok(r.body.equals(blob.subarray(a, b + 1)), `${h} bytes are right`);
  }
  const past = await getViaProxy(d.proxyUrl, url, { range: `bytes=${blob.length}-` });
  t.equal(past.status, 416);
  t.equal(past.headers['content-range'], `bytes */${blob.length}`);
  const multi = await getViaProxy(d.proxyUrl, url, { range: 'bytes=0-1,5-6' });
  t.equal(multi.status, 400, 'several ranges: 400, never a silent 200');
  t.match(multi.body.toString(), /multiple ranges/);
  const junk = await getViaProxy(d.proxyUrl, url, { range: 'pages=1' });
  t.equal(junk.status, 400);
  t.equal((await getViaProxy(d.proxyUrl, url)).status, 200, 'no Range: the whole blob');
});

t.test('open-proxy guard: only configured registries and hosts are proxied', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(2 * MiB, 41);
  const { digest, url } = await pushBlob(reg.url, 'team/guard', blob);
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url], { registries: ['http://registry.invalid:5000'], proxyHosts: [] });
  const r = await getViaProxy(d.proxyUrl, url);
  t.equal(r.status, 403);
  t.match(r.body.toString(), /host not allowed/);
  const mirror = await getViaProxy(d.proxyUrl, `/v2/team/guard/blobs/${digest}?ns=${reg.host}`);
  t.equal(mirror.status, 403, '?ns= cannot name an unlisted registry either');
  // dfget falls back to fetching the URL itself.
  const dir = await tempDir(t);
  const run = await dfget([url, '-O', join(dir, 'f'), '--daemon', d.proxyUrl, '--supernode', sn.url, '--no-progress']);
  t.equal(run.code, 0, run.stderr);
  t.match(run.stderr, /host not allowed.*standalone/s);
  t.equal(sha(await readFile(join(dir, 'f'))), digest);
});

t.test('mirror upstream from ?ns= (containerd) and X-Dragonfly-Registry; one task per registry; redirects to signed URLs keep one task', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(6 * MiB, 51);
  const { digest } = await pushBlob(reg.url, 'team/ns', blob);
  // A "registry" that redirects blob GETs to the real one with expiring signature params, like S3-backed registries.
  let n = 0;
  const redirector = createServer((req, res) => {
    n++;
    res.writeHead(307, { location: `${reg.url}${req.url!.split('?')[0]}?X-Amz-Signature=${n}&X-Amz-Expires=60` }).end();
  });
  await new Promise<void>((r) => redirector.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise((r) => redirector.close(r)));
  const redirectUrl = `http://127.0.0.1:${(redirector.address() as { port: number }).port}`;
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url], { registries: [reg.url, redirectUrl], proxyHosts: [] });

  const viaNs = await getViaProxy(d.proxyUrl, `/v2/team/ns/blobs/${digest}?ns=${reg.host}`);
  t.equal(viaNs.status, 200);
  t.equal(sha(viaNs.body), digest);
  const viaHeader = await getViaProxy(d.proxyUrl, `/v2/team/ns/blobs/${digest}`, { 'x-dragonfly-registry': redirectUrl });
  t.equal(viaHeader.status, 200);
  t.equal(sha(viaHeader.body), digest);
  // Both went P2P (only P2P answers name a task): the two tasks below are real ones, not two missing headers.
  const TASK = /^[0-9a-f]{64}$/;
  t.match(viaNs.headers['x-damselfly-task-id'], TASK);
  t.match(viaHeader.headers['x-damselfly-task-id'], TASK);
  t.not(viaHeader.headers['x-damselfly-task-id'], viaNs.headers['x-damselfly-task-id'], 'another registry is another task: its bytes are never served as the first one\'s');
  const sameRegistry = await getViaProxy(d.proxyUrl, `/v2/other/repo/blobs/${digest}`, { 'x-dragonfly-registry': reg.url });
  t.equal(sameRegistry.status, 200);
  t.equal(sameRegistry.headers['x-damselfly-task-id'], viaNs.headers['x-damselfly-task-id'], 'one registry: ?ns=, the header and any repository are one task');

  const d2 = await startDaemon(t, [sn.url], { registries: [redirectUrl], proxyHosts: [] });
  const redirected = await getViaProxy(d2.proxyUrl, `/v2/team/ns/blobs/${digest}`, { range: 'bytes=0-1023' });
  t.equal(redirected.status, 206, 'the seeder follows the 307');
  t.ok(redirected.body.equals(blob.subarray(0, 1024)));
  const again = await getViaProxy(d2.proxyUrl, `/v2/team/ns/blobs/${digest}`, { range: `bytes=${5 * MiB}-${5 * MiB + 9}` });
  t.ok(again.body.equals(blob.subarray(5 * MiB, 5 * MiB + 10)));
  t.match(again.headers['x-damselfly-task-id'], TASK);
  t.equal(again.headers['x-damselfly-task-id'], viaHeader.headers['x-damselfly-task-id'], 'every signed redirect of one blob is one task');
  t.equal(await metricValue(d2.metrics.registry, 'damselfly_dfdaemon_proxy_requests_total', { kind: 'p2p' }), 2, 'both reads went P2P, none around it');
  const direct = await request(`${redirectUrl}/v2/`);
  await direct.body.dump();
  t.equal(direct.statusCode, 307, 'the redirector really redirects');
});

t.test('a push through the forward proxy: curl uploads a blob with Expect: 100-continue, the registry gets it whole', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const sn = await startSupernode(t);
  const d = await startDaemon(t, [sn.url], { registries: [reg.url], proxyHosts: [] });
  const dir = await tempDir(t);
  const blob = makeBlob(2 * MiB + 7, 91);
  const file = join(dir, 'layer');
  await writeFile(file, blob);
  const curl = async (args: string[]) => {
    const { execFile } = await import('node:child_process');
    return new Promise<{ code: number; out: string }>((resolve) =>
      execFile('curl', ['-sS', '-x', d.proxyUrl, ...args], { encoding: 'utf8' }, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, out: stdout + stderr })),
    );
  };
  const started = await curl(['-X', 'POST', '-D', '-', '-o', '/dev/null', `${reg.url}/v2/team/pushed/blobs/uploads/`]);
  const location = /^location:\s*(\S+)/im.exec(started.out)?.[1];
  t.ok(location, `the registry opened an upload through the proxy (${started.out.slice(0, 200)})`);
  const target = new URL(location!, reg.url);
  target.searchParams.set('digest', sha(blob));
  // curl sends Expect: 100-continue with a body this size; the proxy answers it and sends the body on without it.
  const put = await curl(['-T', file, '-v', '-o', '/dev/null', target.href]);
  t.match(put.out, /> Expect: 100-continue/i, 'curl asked to continue');
  t.match(put.out, /< HTTP\/1\.1 201/, `the upload was accepted (${put.out.slice(-300)})`);
  const back = await request(`${reg.url}/v2/team/pushed/blobs/${sha(blob)}`);
  t.equal(sha(Buffer.from(await back.body.arrayBuffer())), sha(blob), 'and the registry holds the blob');
});

t.test('P2P unavailable (no supernode, back-to-source off): the blob still arrives the direct way, counted', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(3 * MiB, 61);
  const { digest } = await pushBlob(reg.url, 'team/fallback', blob);
  const d = await startDaemon(t, ['http://127.0.0.1:1'], { registries: [reg.url], proxyHosts: [], backSource: false });
  const r = await getViaProxy(d.proxyUrl, `/v2/team/fallback/blobs/${digest}`);
  t.equal(r.status, 200);
  t.equal(sha(r.body), digest);
  // Counted once the upstream's answer is through, which the client may see end a moment before.
  t.equal(await until('the fallback counted', async () => (await metricValue(d.metrics.registry, 'damselfly_dfdaemon_proxy_requests_total', { kind: 'fallback_p2p_failed' })) || undefined), 1);
  const missing = await getViaProxy(d.proxyUrl, `/v2/team/fallback/blobs/sha256:${'e'.repeat(64)}`);
  t.equal(missing.status, 404, "the registry's own 404 reaches the client");
});
