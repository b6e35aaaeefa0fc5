/**
 * Preheat by image reference: a real multi-arch image (built with umoci, pushed with skopeo --all) in the
 * real registry; the operator CLI `dfctl` (the built binary) preheats one platform into the supernode, and after it a
 * skopeo pull through a dfdaemon costs the registry no blob bytes; scope all-peers puts the blobs on every connected
 * dfdaemon; private registries with the operator's credentials; and the errors an operator can make.
 */
import t from 'tap';
import bcrypt from 'bcryptjs';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseRange, rendezvous, taskIdFor } from '@damselfly/shared';
import { loadSupernodeConfig, type Supernode } from '@damselfly/supernode';
import { freePort, makeBlob, startRegistry } from './helpers/registry.js';
import { ROOT, OPERATOR_TOKEN, TEST_SECRET, getViaProxy, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { buildAndPushMultiArchImage, mirrorConf, skopeo } from './helpers/image.js';
import { metricValue } from './helpers/metrics.js';
import { startTokenServer } from './helpers/token-server.js';
import { until } from './helpers/until.js';

const KiB = 1024;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const hostOf = (u: string) => new URL(u).host;

function dfctl(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(ROOT, 'supernode/dist/dfctl.js'), ...args], { env: { ...process.env, DAMSELFLY_CLUSTER_SECRET: TEST_SECRET, ...env }, timeout: 120_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

async function api(sn: { url: string }, method: string, path: string, body?: unknown) {
  const res = await fetch(`${sn.url}${path}`, { method, headers: { authorization: `Bearer ${OPERATOR_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
  return { status: res.status, body: (await res.json()) as any };
}

t.test('preheat a multi-arch image', async (t) => {
  const dir = await tempDir(t, 'damselfly-preheat-');
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const image = await buildAndPushMultiArchImage(dir, reg.host, 'team/app', [
    { os: 'linux', arch: 'amd64', layerSizes: [700 * KiB, 5 * 1024 * KiB] },
    { os: 'linux', arch: 'arm64', layerSizes: [600 * KiB, 6 * 1024 * KiB] },
  ]);
  const served = (blobs: { digest: string }[], atLeast = 0) => reg.settledBytesServed(blobs.map((b) => b.digest), atLeast);
  const sn = await startSupernode(t);
  const d1 = await startDaemon(t, [sn.url], { registries: [reg.url] });
  const d2 = await startDaemon(t, [sn.url], { registries: [reg.url] });

  await t.test('dfctl preheat --platform linux/arm64 --wait: only that platform, seeded whole', async (t) => {
    const r = await dfctl(['preheat', `http://${image.ref}`, '--platform', 'linux/arm64', '--supernode', sn.url, '--wait']);
    t.equal(r.code, 0, r.stderr);
    const id = /^([0-9a-f-]{36}) succeeded: 3\/3 blobs/m.exec(r.stdout)?.[1];
    t.ok(id, `the job succeeded with the image's 3 arm64 blobs: ${r.stdout.trim()}`);
    const job = (await api(sn, 'GET', `/api/v1/preheat/${id}`)).body;
    t.same(job.platforms, ['linux/arm64']);
    t.same(job.layers.map((l: { digest: string }) => l.digest).sort(), image.platforms['linux/arm64']!.map((b) => b.digest).sort(), 'the arm64 config and layers');
    t.equal(job.bytes.seeded, job.bytes.total);
    t.equal(await served(image.platforms['linux/amd64']!), 0, 'nothing of amd64 was fetched');
    const status = await dfctl(['preheat-status', id!, '--supernode', sn.url]);
    t.equal(JSON.parse(status.stdout).state, 'succeeded', 'dfctl preheat-status shows it');
  });

  await t.test('after the preheat, a skopeo pull through a dfdaemon costs the registry no blob bytes', async (t) => {
    const arm = image.platforms['linux/arm64']!;
    const before = await served(arm);
    t.ok(before >= arm.reduce((s, b) => s + b.size, 0), 'the preheat fetched them');
    const conf = await mirrorConf(dir, reg.host, hostOf(d1.proxyUrl));
    const out = join(dir, 'pulled');
    const r = await skopeo(['--registries-conf', conf, '--override-arch', 'arm64', 'copy', '--src-tls-verify=false', `docker://${image.ref}`, `dir:${out}`]);
    t.equal(r.code, 0, r.stderr.slice(-300));
    for (const b of arm) t.equal(sha(await readFile(join(out, b.digest.slice(7)))), b.digest, `${b.digest.slice(0, 19)} pulled whole`);
    t.equal(await served(arm), before, 'the registry served no more blob bytes');
    t.ok((await metricValue(d1.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'supernode' })) > 0, 'the dfdaemon got them from the supernode');
  });

  await t.test('scope all-peers: every connected dfdaemon fetches the blobs', async (t) => {
    const amd = image.platforms['linux/amd64']!;
    const r = await api(sn, 'POST', '/api/v1/preheat', { image: `http://${image.ref}`, platforms: ['linux/amd64'], scope: 'all-peers' });
    t.equal(r.status, 202);
    const job = await until('the job to finish', async () => {
      const j = (await api(sn, 'GET', `/api/v1/preheat/${r.body.id}`)).body;
      return j.state === 'succeeded' || j.state === 'failed' ? j : undefined;
    }, 30_000, 100);
    t.equal(job.state, 'succeeded', JSON.stringify(job.errors));
    t.equal(job.peers.asked, 2, 'both dfdaemons were told');
    for (const d of [d1, d2]) {
      for (const b of amd) {
        const taskId = taskIdFor(new URL(`${reg.url}/v2/team/app/blobs/${b.digest}`));
        await until(`${b.digest} complete on a dfdaemon`, () => d.store.get(taskId)?.complete, 30_000, 100);
      }
      // Counted once the download's promise settles, a moment after the store marks the blob complete.
      const ok = () => metricValue(d.metrics.registry, 'damselfly_dfdaemon_preheat_blobs_total', { result: 'ok' });
      await until('every preheated blob counted', async () => (await ok()) >= amd.length, 5_000, 20).catch(() => undefined);
      t.equal(await ok(), amd.length, 'each fetched every blob');
    }
    t.equal(await served(amd, amd.reduce((s, b) => s + b.size, 0)), amd.reduce((s, b) => s + b.size, 0), 'the registry served each blob once (its size probe brought its first block)');
  });

  await t.test('operator errors: a clear answer, no job', async (t) => {
    const bad = await api(sn, 'POST', '/api/v1/preheat', { image: 'Not An Image!' });
    t.equal(bad.status, 400);
    t.equal(bad.body.code, 'SN_BAD_IMAGE');
    const scope = await dfctl(['preheat', `http://${image.ref}`, '--scope', 'everyone', '--supernode', sn.url]);
    t.equal(scope.code, 2, 'a bad --scope is a usage error');
    const noPlatform = await dfctl(['preheat', `http://${image.ref}`, '--platform', 'linux/s390x', '--supernode', sn.url, '--wait']);
    t.equal(noPlatform.code, 1, 'a job that fails exits 1');
    t.match(noPlatform.stderr, /no manifest for linux\/s390x \(it has linux\/amd64, linux\/arm64\)/);
    const missing = await dfctl(['preheat', `http://${reg.host}/team/nothing:1`, '--supernode', sn.url, '--wait']);
    t.equal(missing.code, 1);
    t.match(missing.stderr, /answered 404/);
    const noToken = await dfctl(['preheat', `http://${image.ref}`, '--supernode', sn.url], { DAMSELFLY_CLUSTER_SECRET: '' });
    t.equal(noToken.code, 3);
    t.match(noToken.stderr, /401/, 'the operator token is required');
    t.equal((await api(sn, 'GET', '/api/v1/preheat/nope')).status, 404);
  });
});

t.test('preheat from a private registry with the operator\'s credentials', async (t) => {
  const dir = await tempDir(t, 'damselfly-preheat-private-');
  const reg = await startRegistry({ htpasswd: `alice:${bcrypt.hashSync('s3cret', 6)}\n` });
  t.teardown(() => reg.stop());
  const image = await buildAndPushMultiArchImage(dir, reg.host, 'team/private', [{ os: 'linux', arch: 'amd64', layerSizes: [300 * KiB] }], 'alice:s3cret');
  const sn = await startSupernode(t);
  const anonymous = await dfctl(['preheat', `http://${image.ref}`, '--supernode', sn.url, '--wait']);
  t.equal(anonymous.code, 1, 'without credentials the job fails');
  t.match(anonymous.stderr, /401/);
  const basic = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
  // From a file (-H @file): the credential is never on dfctl's command line.
  const headerFile = join(dir, 'registry-headers');
  await writeFile(headerFile, `Authorization: ${basic}\n`, { mode: 0o600 });
  const r = await dfctl(['preheat', `http://${image.ref}`, '-H', `@${headerFile}`, '--supernode', sn.url, '--wait']);
  t.equal(r.code, 0, r.stderr);
  const jobs = (await api(sn, 'GET', '/api/v1/preheat')).body.jobs;
  t.notMatch(JSON.stringify(jobs), /s3cret|Basic /, 'the credentials are in no job');
});

t.test('preheat through the registry\'s token auth (the Bearer dance a client does)', async (t) => {
  const dir = await tempDir(t, 'damselfly-preheat-token-');
  const tokens = await startTokenServer(dir, { alice: 's3cret' });
  t.teardown(() => tokens.close());
  const reg = await startRegistry({ token: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootcertbundle: tokens.cert } });
  t.teardown(() => reg.stop());
  const image = await buildAndPushMultiArchImage(dir, reg.host, 'team/tokened', [{ os: 'linux', arch: 'amd64', layerSizes: [400 * KiB] }], 'alice:s3cret');
  const sn = await startSupernode(t);
  const anonymous = await dfctl(['preheat', `http://${image.ref}`, '--supernode', sn.url, '--wait']);
  t.equal(anonymous.code, 1, 'an anonymous token grants nothing: the job fails');
  t.match(anonymous.stderr, /401/);
  const before = tokens.issued.filter((u) => u === 'alice').length;
  const basic = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
  const r = await dfctl(['preheat', `http://${image.ref}`, '-H', `Authorization: ${basic}`, '--supernode', sn.url, '--wait']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /succeeded: 2\/2 blobs/);
  t.ok(tokens.issued.filter((u) => u === 'alice').length > before, 'the supernode got a token for alice from the token service');
  const blobs = image.platforms['linux/amd64']!;
  t.equal(await reg.settledBytesServed(blobs.map((b) => b.digest), blobs.reduce((s, b) => s + b.size, 0)), blobs.reduce((s, b) => s + b.size, 0), 'and seeded the blobs with it (each once, the size probe bringing the first block)');
});

t.test('a preheat outlasting the registry’s token renews it: pieces refused with an expired token are asked for again', async (t) => {
  // A registry with its own token service, as Docker Hub's (whose tokens last 5 minutes): here a token is good for
  // 8 answers, so a job of 14 pieces (4 at a time) must renew it. Only alice's tokens grant anything.
  const MiB = 1024 * 1024;
  const layer = makeBlob(12 * MiB, 91);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const blobs = new Map([[sha(layer), layer], [sha(config), config]]);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }],
  }));
  const uses = new Map<string, number>();
  let issued = 0;
  const refused: string[] = [];
  const server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname === '/token') {
      const alice = req.headers.authorization === `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
      const token = alice ? `alice-${++issued}` : 'anonymous';
      if (alice) uses.set(token, 0);
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token }));
    }
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const used = token === undefined ? undefined : uses.get(token);
    if (used === undefined || used >= 8) {
      if (used !== undefined) refused.push(token!);
      const realm = `http://${req.headers.host}/token`;
      return void res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="fake",scope="repository:team/app:pull"` }).end();
    }
    uses.set(token!, used + 1);
    if (u.pathname === '/v2/team/app/manifests/v1') {
      return void res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': manifest.length }).end(req.method === 'HEAD' ? undefined : manifest);
    }
    const body = blobs.get(/\/v2\/team\/app\/blobs\/(sha256:[a-f0-9]{64})$/.exec(u.pathname)?.[1] ?? '');
    if (!body) return void res.writeHead(404).end();
    const r = parseRange(req.headers.range, body.length);
    if (!r) return void res.writeHead(200, { 'content-length': body.length }).end(req.method === 'HEAD' ? undefined : body);
    res.writeHead(206, { 'content-length': r.end - r.start + 1, 'content-range': `bytes ${r.start}-${r.end}/${body.length}` });
    res.end(req.method === 'HEAD' ? undefined : body.subarray(r.start, r.end + 1));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  const host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  const sn = await startSupernode(t);
  const basic = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
  const r = await dfctl(['preheat', `http://${host}/team/app:v1`, '-H', `Authorization: ${basic}`, '--supernode', sn.url, '--wait']);
  t.equal(r.code, 0, `${r.stdout} ${r.stderr}`);
  t.match(r.stdout, /succeeded: 2\/2 blobs/);
  t.ok(refused.length >= 1, `tokens ran out during the job (${refused.length} refusals) and were renewed (${issued} issued)`);
  for (const [digest, body] of blobs) {
    const id = taskIdFor(new URL(`http://${host}/v2/team/app/blobs/${digest}`));
    t.ok(sn.store.get(id) && Array.from({ length: sn.store.get(id)!.pieceCount }, (_, n) => sn.store.pieceSha(id, n)).every(Boolean), `${digest === sha(layer) ? 'the layer' : 'the config'} is seeded whole (${body.length} bytes)`);
  }
});

t.test('three supernodes behind one Service: a preheat through any seeds each blob once, on the supernode the dfdaemons ask for it, and any answers for the job', async (t) => {
  const dir = await tempDir(t, 'damselfly-preheat-');
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const image = await buildAndPushMultiArchImage(dir, reg.host, 'team/spread', [{ os: 'linux', arch: 'amd64', layerSizes: [100 * KiB, 200 * KiB, 300 * KiB, 400 * KiB, 500 * KiB, 600 * KiB, 700 * KiB, 800 * KiB, 900 * KiB] }]);
  const blobs = image.platforms['linux/amd64']!;
  const urls: string[] = [];
  for (let i = 0; i < 3; i++) urls.push(`http://127.0.0.1:${await freePort()}`);
  const sns: Supernode[] = [];
  for (const url of urls) sns.push(await startSupernode(t, { port: Number(new URL(url).port), advertiseUrl: url, clusterSupernodes: urls }));
  t.throws(() => loadSupernodeConfig({ flags: { clusterSupernodes: urls, clusterSecret: TEST_SECRET } }), /clusterSupernodes: must list this supernode as advertiseUrl names it/, 'the list must name this supernode');

  // Taken by the second, as a Service may pick any; followed through the third.
  const started = await api(sns[1]!, 'POST', '/api/v1/preheat', { image: `http://${image.ref}`, platforms: ['linux/amd64'] });
  t.equal(started.status, 202);
  const job = await until('the job to end', async () => {
    const j = (await api(sns[2]!, 'GET', `/api/v1/preheat/${started.body.id}`)).body;
    return j.finishedAt ? j : undefined;
  }, 60_000, 200);
  t.equal(job.state, 'succeeded', `the job succeeded (errors: ${JSON.stringify(job.errors)})`);
  t.equal(job.bytes.seeded, job.bytes.total, 'every byte seeded, as the job reports it');
  const owners = blobs.map((b) => rendezvous(urls, taskIdFor(new URL(`${reg.url}/v2/team/spread/blobs/${b.digest}`), b.digest))[0]!);
  // Ten blobs over three supernodes: all on one would happen once in 20,000 runs.
  t.ok(new Set(owners).size >= 2, 'the blobs belong to more than one supernode');
  for (const [i, b] of blobs.entries()) {
    const taskId = taskIdFor(new URL(`${reg.url}/v2/team/spread/blobs/${b.digest}`), b.digest);
    const holders = urls.filter((_u, k) => sns[k]!.store.get(taskId) !== undefined);
    t.same(holders, [owners[i]], `${b.digest.slice(0, 19)} is on its own supernode only`);
    const layer = job.layers.find((l: { digest: string }) => l.digest === b.digest);
    t.equal(layer?.supernode, owners[i] === urls[1] ? undefined : owners[i], 'and the job says where');
  }
  const total = blobs.reduce((s, b) => s + b.size, 0);
  t.equal(await reg.settledBytesServed(blobs.map((b) => b.digest), total), total, 'the registry served each blob once');

  // A dfdaemon knowing the three pulls every blob from the supernode it asks for it: not one more registry byte.
  const d = await startDaemon(t, urls, { registries: [reg.url] });
  for (const b of blobs) {
    const r = await getViaProxy(d.proxyUrl, `${reg.url}/v2/team/spread/blobs/${b.digest}`);
    t.equal(sha(r.body), b.digest, `${b.digest.slice(0, 19)} pulled whole`);
  }
  t.equal(await reg.settledBytesServed(blobs.map((b) => b.digest)), total, 'the registry served no more blob bytes');
  t.equal((await api(sns[0]!, 'GET', `/api/v1/preheat/${'0'.repeat(8)}`)).status, 404, 'a job none of them has is a 404');

  // One supernode down: a preheat through another seeds that one's blobs itself (once in the cluster still), and a
  // job nobody else has is a 502 now, not a 404: the one down may hold it.
  const other = await buildAndPushMultiArchImage(await tempDir(t, 'damselfly-preheat-'), reg.host, 'team/spread2', [{ os: 'linux', arch: 'amd64', layerSizes: [110 * KiB, 210 * KiB, 310 * KiB, 410 * KiB, 510 * KiB, 610 * KiB, 710 * KiB, 810 * KiB, 910 * KiB] }]);
  const more = other.platforms['linux/amd64']!;
  const ownerOf = (b: { digest: string }) => rendezvous(urls, taskIdFor(new URL(`${reg.url}/v2/team/spread2/blobs/${b.digest}`), b.digest))[0];
  // The one stopped: whichever of the two not asked owns more of these blobs.
  const victim = more.filter((b) => ownerOf(b) === urls[0]).length >= more.filter((b) => ownerOf(b) === urls[2]).length ? 0 : 2;
  const downs = more.filter((b) => ownerOf(b) === urls[victim]);
  t.ok(downs.length > 0, 'the stopped supernode owns some of the blobs');
  await sns[victim]!.stop();
  const again = await api(sns[1]!, 'POST', '/api/v1/preheat', { image: `http://${other.ref}`, platforms: ['linux/amd64'] });
  const done = await until('the second job to end', async () => {
    const j = (await api(sns[1]!, 'GET', `/api/v1/preheat/${again.body.id}`)).body;
    return j.finishedAt ? j : undefined;
  }, 60_000, 200);
  t.equal(done.state, 'succeeded', `the job succeeded with a supernode down (errors: ${JSON.stringify(done.errors)})`);
  for (const b of downs) {
    const taskId = taskIdFor(new URL(`${reg.url}/v2/team/spread2/blobs/${b.digest}`), b.digest);
    t.ok(sns[1]!.store.get(taskId), `${b.digest.slice(0, 19)} (the stopped one's) was seeded by the supernode asked`);
  }
  const moreTotal = more.reduce((s, b) => s + b.size, 0);
  t.equal(await reg.settledBytesServed(more.map((b) => b.digest), moreTotal), moreTotal, 'each blob once all the same');
  t.equal((await api(sns[1]!, 'GET', `/api/v1/preheat/${'0'.repeat(8)}`)).status, 502, 'a job none of the others has, with one down: 502');
});
