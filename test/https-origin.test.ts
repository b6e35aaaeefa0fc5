/**
 * https origins with their own CA: a real registry behind TLS with a self-signed CA made by openssl here.
 * Both daemons take the CA per origin host (originCaFiles); a supernode without it says so in the client's error
 * instead of the dfdaemon silently going direct; nydusd-style http:// proxy requests for an https registry are
 * upgraded; originInsecureHosts skips verification for a host.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent, setGlobalDispatcher, getGlobalDispatcher } from 'undici';
import { loadDaemonConfig } from '@damselfly/dfdaemon';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import { getViaProxy, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { metricValue } from './helpers/metrics.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A CA and a certificate for 127.0.0.1 signed by it (openssl, as an operator would make them). */
async function makeCa(dir: string) {
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Damselfly test CA');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  await writeFile(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'ext.cnf');
  return { ca: join(dir, 'ca.pem'), cert: join(dir, 'server.pem'), key: join(dir, 'server.key') };
}

t.test('https origins with their own CA', async (t) => {
  const dir = await tempDir(t, 'damselfly-tls-');
  const pki = await makeCa(dir);
  const caPem = await readFile(pki.ca);
  const reg = await startRegistry({ tls: { cert: pki.cert, key: pki.key, ca: caPem } });
  t.teardown(() => reg.stop());
  // Only this test's own requests (pushing the blob) trust the CA through the global dispatcher; the daemons use
  // their own dispatchers and know the CA only from their config.
  const previous = getGlobalDispatcher();
  setGlobalDispatcher(new Agent({ connect: { ca: caPem } }));
  t.teardown(() => setGlobalDispatcher(previous));
  const host = new URL(reg.url).host;
  const caFiles = { [host]: pki.ca };

  await t.test('the CA on both daemons: P2P over https, the registry serves the blob once', async (t) => {
    const blob = makeBlob(6 * MiB, 120);
    const { digest, url } = await pushBlob(reg.url, 'tls/both', blob);
    const sn = await startSupernode(t, { originCaFiles: caFiles });
    const d = await startDaemon(t, [sn.url], { originCaFiles: caFiles, registries: [reg.url] });
    const r = await getViaProxy(d.proxyUrl, url);
    t.equal(r.status, 200);
    t.equal(`sha256:${sha(r.body)}`, digest);
    t.ok((await metricValue(d.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'supernode' })) > 0, 'through the supernode');
    t.equal(await reg.settledBytesServed(digest, blob.length), blob.length, 'the registry served the blob once (the size probe brought its first block)');
  });

  await t.test('the CA on the dfdaemon only: the client is told the supernode cannot verify the origin, nothing goes direct', async (t) => {
    const blob = makeBlob(2 * MiB, 121);
    const { digest, url } = await pushBlob(reg.url, 'tls/half', blob);
    const sn = await startSupernode(t);
    const d = await startDaemon(t, [sn.url], { originCaFiles: caFiles, registries: [reg.url] });
    const r = await getViaProxy(d.proxyUrl, url);
    t.equal(r.status, 502, 'an error, not the blob the direct way');
    t.match(r.body.toString(), /cannot verify the origin's TLS certificate[\s\S]*originCaFiles/, `the error says why and what to set: ${r.body.toString().slice(0, 300)}`);
    t.equal(await reg.settledBytesServed(digest), 0, 'the registry served no blob bytes');
  });

  await t.test('nydusd with use_http: an http:// request for a registry configured as https is upgraded', async (t) => {
    const blob = makeBlob(3 * MiB, 122);
    const { digest, url } = await pushBlob(reg.url, 'tls/nydus', blob);
    const sn = await startSupernode(t, { originCaFiles: caFiles });
    const d = await startDaemon(t, [sn.url], { originCaFiles: caFiles, registries: [reg.url] });
    const plain = url.replace('https://', 'http://');
    const r = await getViaProxy(d.proxyUrl, plain);
    t.equal(r.status, 200, 'served');
    t.equal(`sha256:${sha(r.body)}`, digest);
  });

  await t.test('originInsecureHosts: no verification for that host (both daemons), the digest still checked', async (t) => {
    const blob = makeBlob(2 * MiB, 123);
    const { digest, url } = await pushBlob(reg.url, 'tls/insecure', blob);
    const sn = await startSupernode(t, { originInsecureHosts: [host] });
    const d = await startDaemon(t, [sn.url], { originInsecureHosts: [host], registries: [reg.url] });
    const r = await getViaProxy(d.proxyUrl, url);
    t.equal(r.status, 200);
    t.equal(`sha256:${sha(r.body)}`, digest);
  });

  await t.test('a CA file that is missing or not PEM is a config error, reported with the others', async (t) => {
    const notPem = join(dir, 'not.pem');
    await writeFile(notPem, 'hello');
    t.throws(
      () => loadDaemonConfig({ flags: { originCaFiles: `a.example:5000=${join(dir, 'missing.pem')},b.example=${notPem}`, parallelPieces: '0' } }),
      /--parallel-pieces[\s\S]*cannot read .*missing\.pem \(for a\.example:5000\)[\s\S]*not\.pem \(for b\.example\) holds no PEM certificate/,
    );
  });
});
