/**
 * The trust boundary as deployed: mutual TLS between every component (certificates made with openssl), and the
 * cluster secret and allowed origins exactly as the Helm chart renders them, driving real daemons that real clients
 * (skopeo, a containerd-style `?ns=` mirror request) pull through.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { Supernode, loadSupernodeConfig } from '@damselfly/supernode';
import { Daemon, loadDaemonConfig } from '@damselfly/dfdaemon';
import { makeBlob, pushBlob, startRegistry } from './helpers/registry.js';
import WebSocket from 'ws';
import { AUTH_HEADER, WS_PATH, sessionProof } from '@damselfly/shared';
import { METRICS_TOKEN, OPERATOR_TOKEN, TEST_SECRET, getViaProxy, startDaemon, startSupernode, tempDir } from './helpers/cluster.js';
import { rawPeer } from './helpers/ws-peer.js';
import { metricValue } from './helpers/metrics.js';
import { findObject, renderChart } from './helpers/chart.js';
import { buildAndPushImage, mirrorConf, skopeo } from './helpers/image.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A throwaway CA and one certificate it signs for 127.0.0.1 (EC P-256: fast to make). */
async function makeCerts(dir: string): Promise<{ ca: string; cert: string; key: string; otherCa: string }> {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', ...ec, '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-subj', '/CN=damselfly-test-ca', '-days', '2']);
  await run('openssl', ['req', ...ec, '-keyout', join(dir, 'node.key'), '-out', join(dir, 'node.csr'), '-subj', '/CN=damselfly-node']);
  await writeFile(join(dir, 'ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n');
  await run('openssl', ['x509', '-req', '-in', join(dir, 'node.csr'), '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key'), '-CAcreateserial', '-out', join(dir, 'node.crt'), '-days', '2', '-extfile', join(dir, 'ext')]);
  await run('openssl', ['req', '-x509', ...ec, '-keyout', join(dir, 'other.key'), '-out', join(dir, 'other.crt'), '-subj', '/CN=someone-else', '-days', '2']);
  return { ca: join(dir, 'ca.crt'), cert: join(dir, 'node.crt'), key: join(dir, 'node.key'), otherCa: join(dir, 'other.crt') };
}

t.test('mutual TLS everywhere: the swarm works over https/wss, nobody without a cluster certificate gets in', async (t) => {
  const certs = await makeCerts(await tempDir(t));
  const tls = { tlsCert: certs.cert, tlsKey: certs.key, tlsCa: certs.ca, tlsClientAuth: true };
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(20 * MiB + 1, 601);
  const { digest, url } = await pushBlob(reg.url, 'team/tls', blob);
  const sn = await startSupernode(t, tls);
  t.match(sn.url, /^https:\/\//, 'the supernode serves https');
  // The first one also serves /metrics on the network, as the chart's PodMonitor scrapes it.
  const daemons = await Promise.all([0, 1, 2].map((i) => startDaemon(t, [sn.url], { ...tls, ...(i === 0 ? { metricsHost: '127.0.0.1', metricsPort: 0 } : {}) })));
  t.match(daemons[0]!.uploadUrl, /^https:\/\//, 'upload servers serve https');
  const results = await Promise.all(daemons.map((d) => getViaProxy(d.proxyUrl, url)));
  for (const r of results) t.equal(sha(r.body), digest, 'pulled over TLS, verified');
  let peerBytes = 0;
  for (const d of daemons) peerBytes += await metricValue(d.metrics.registry, 'damselfly_dfdaemon_download_bytes_total', { source: 'peer' });
  t.ok(peerBytes > 0, `pieces travelled peer to peer over TLS (${peerBytes} bytes)`);

  // No client certificate: the TLS handshake itself fails, on the supernode and on an upload server.
  // Each client below trusts the cluster CA, so what refuses it is the server's demand for a certificate, not the
  // client's doubt about the server's.
  const noCert = new Agent({ connect: { ca: await readFile(certs.ca) } });
  t.teardown(() => noCert.close());
  const noCertRefused = { code: /ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED|ECONNRESET|UND_ERR_SOCKET/ };
  await t.rejects(request(`${sn.url}/healthy`, { dispatcher: noCert }), noCertRefused, 'supernode: no client certificate, no connection');
  await t.rejects(request(`${daemons[0]!.uploadUrl}/healthy`, { dispatcher: noCert }), noCertRefused, 'upload server: likewise');
  // A certificate from another CA: refused too.
  const stranger = new Agent({ connect: { ca: await readFile(certs.ca), cert: await readFile(certs.otherCa), key: await readFile(certs.otherCa.replace('.crt', '.key')) } });
  t.teardown(() => stranger.close());
  await t.rejects(request(`${sn.url}/healthy`, { dispatcher: stranger }), { code: /ERR_SSL_TLSV1_ALERT_UNKNOWN_CA|ECONNRESET|UND_ERR_SOCKET/ }, 'a certificate the cluster CA did not sign is refused');
  const member = new Agent({ connect: { ca: await readFile(certs.ca), cert: await readFile(certs.cert), key: await readFile(certs.key) } });
  t.teardown(() => member.close());
  const ok = await request(`${sn.url}/healthy`, { dispatcher: member });
  t.equal(ok.statusCode, 200, 'a cluster certificate gets in');
  await ok.body.dump();

  // A dfdaemon's /metrics on the network: the cluster's TLS, and the metrics token besides.
  const metricsUrl = `${daemons[0]!.metricsUrl}/metrics`;
  t.match(metricsUrl, /^https:\/\//, 'served over https');
  await t.rejects(request(metricsUrl, { dispatcher: noCert }), noCertRefused, 'no client certificate, no connection');
  const bare = await request(metricsUrl, { dispatcher: member });
  t.equal(bare.statusCode, 401, `a certificate without the token: refused (${await bare.body.text()})`);
  // Neither the cluster secret nor the operator token (which can ask the supernode for preheats) is taken by a node.
  for (const [what, token] of [['the cluster secret', TEST_SECRET], ['the operator token', OPERATOR_TOKEN]]) {
    const refused = await request(metricsUrl, { dispatcher: member, headers: { authorization: `Bearer ${token}` } });
    t.equal(refused.statusCode, 401, `not ${what}`);
    t.match(await refused.body.text(), /"code":"AUTH_INVALID"/);
  }
  const scraped = await request(metricsUrl, { dispatcher: member, headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
  t.equal(scraped.statusCode, 200, 'with the metrics token: the metrics');
  t.match(await scraped.body.text(), /damselfly_dfdaemon_download_bytes_total\{source="(peer|supernode)"\} [1-9]/, "this node's own counters");
  // The supernode's /metrics takes the metrics token too (and still the operator's own).
  for (const token of [METRICS_TOKEN, OPERATOR_TOKEN]) {
    const sm = await request(`${sn.url}/metrics`, { dispatcher: member, headers: { authorization: `Bearer ${token}` } });
    t.equal(sm.statusCode, 200, `supernode /metrics with the ${token === METRICS_TOKEN ? 'metrics' : 'operator'} token`);
    await sm.body.dump();
  }
  t.equal(daemons[1]!.metricsUrl, '', 'a node without metricsHost opens no such listener');
  // A member's session proof over wss, without a certificate: the handshake fails before the proof is looked at.
  const ws = new WebSocket(sn.url.replace(/^http/, 'ws') + WS_PATH, { ca: await readFile(certs.ca), headers: { [AUTH_HEADER]: sessionProof(Buffer.from(TEST_SECRET), 'plain') } });
  const outcome = await new Promise<string>((resolve) => {
    ws.once('open', () => resolve('open'));
    ws.once('unexpected-response', (_req, res) => resolve(`upgrade answered ${res.statusCode}`));
    ws.once('error', (err: Error & { code?: string }) => resolve(`error ${err.code ?? err.message}`));
  });
  ws.terminate();
  t.match(outcome, /^error (ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED|ECONNRESET)/, 'no wss session without a certificate, even with the cluster secret');
});

t.test("the chart's rendered config (cluster secret, allowed origins) runs a real cluster: ?ns= mirror and skopeo pulls", async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const dir = await tempDir(t);
  const objs = await renderChart(['--set', `dfdaemon.registries={${reg.url}}`, '--set', 'supernode.originAllowCidrs={127.0.0.0/8}']);
  const secret = Buffer.from(findObject(objs, 'Secret', 'rel-damselfly-cluster-secret').data!.secret!, 'base64').toString();
  t.ok(secret.length >= 32, 'the chart generated a real secret');
  const secretFile = join(dir, 'cluster-secret');
  await writeFile(secretFile, secret, { mode: 0o600 });
  // The rendered files as the pods read them, with the mounted secret's path pointed at this machine's copy.
  const localConfig = async (cm: string, key: string) => {
    const cfg = parseYaml(findObject(objs, 'ConfigMap', cm).data![key]!) as Record<string, unknown>;
    cfg.clusterSecretFile = secretFile;
    const file = join(dir, key);
    await writeFile(file, stringifyYaml(cfg));
    return { file, cfg };
  };
  const snCfg = await localConfig('rel-damselfly-supernode', 'supernode.yaml');
  t.same(snCfg.cfg.allowedOrigins, [reg.url], 'the supernode may seed from the registries the dfdaemons serve');
  // One supernode on this machine stands in for the StatefulSet: the replicas' list is the pods' names, not its own.
  const sn = new Supernode(loadSupernodeConfig({ file: snCfg.file, flags: { host: '127.0.0.1', port: 0, dataDir: join(dir, 'sn'), logLevel: 'warn', clusterSupernodes: [] } }));
  await sn.start();
  t.teardown(() => sn.stop());
  const dfCfg = await localConfig('rel-damselfly-dfdaemon', 'dfdaemon.yaml');
  const daemons: Daemon[] = [];
  for (const i of [0, 1]) {
    const d = new Daemon(
      loadDaemonConfig({
        file: dfCfg.file,
        flags: { supernodes: sn.url, dataDir: join(dir, `df${i}`), proxyPort: 0, uploadHost: '127.0.0.1', uploadPort: 0, healthPort: 0, peerId: `node-${i}`, logLevel: 'warn' },
      }),
    );
    await d.start();
    t.teardown(() => d.stop());
    daemons.push(d);
  }
  const image = await buildAndPushImage(dir, reg.host, 'apps/chart', [3 * MiB, 2 * MiB]);
  // containerd's mirror request: origin-form path plus ?ns=<registry>.
  for (const b of image.blobs) {
    const r = await getViaProxy(daemons[0]!.proxyUrl, `/v2/apps/chart/blobs/${b.digest}?ns=${reg.host}`);
    t.equal(r.status, 200);
    t.equal(sha(r.body), b.digest, `?ns= blob ${b.digest.slice(7, 19)}`);
  }
  // skopeo through the other node's mirror (registries.conf).
  const conf = await mirrorConf(dir, reg.host, new URL(daemons[1]!.proxyUrl).host);
  const out = join(dir, 'pulled');
  const s = await skopeo(['--registries-conf', conf, 'copy', '--src-tls-verify=false', `docker://${image.ref}`, `dir:${out}`]);
  t.equal(s.code, 0, s.stderr.slice(-300));
  const files = await readdir(out);
  for (const b of image.blobs) {
    t.ok(files.includes(b.digest.slice(7)));
    t.equal(sha(await readFile(join(out, b.digest.slice(7)))), b.digest);
  }
  for (const d of daemons) t.ok((await metricValue(d.metrics.registry, 'damselfly_dfdaemon_proxy_requests_total', { kind: 'p2p' })) >= image.blobs.length, 'blobs went P2P');
  t.equal(await metricValue(daemons[1]!.metrics.registry, 'damselfly_dfdaemon_back_source_total'), 0, 'through the supernode, not around it');
  const total = image.blobs.reduce((n, b) => n + b.size, 0);
  const served = await reg.settledBytesServed(image.blobs.map((b) => b.digest));
  t.ok(served <= total + image.blobs.length, `each blob left the registry once (${served} bytes for ${total})`);
  // A peer with the wrong secret is kept out of this cluster.
  const outsider = await rawPeer(sn.url, 'outsider', 'a-different-secret-entirely-000').then((p) => (p.close(), 0), (err: { status?: number }) => err.status ?? -1);
  t.equal(outsider, 401, 'the chart secret is the membership: another secret is refused at the upgrade');
  const insider = await rawPeer(sn.url, 'insider', secret);
  t.equal(insider.ws.readyState, WebSocket.OPEN, 'and a peer with the chart secret is let in');
  insider.close();
});
