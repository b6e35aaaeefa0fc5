/**
 * The Helm chart, rendered by real helm: lint, the objects an operator expects, the cluster secret and TLS wiring,
 * and the config files it writes accepted by the daemons' own config loaders.
 */
import t from 'tap';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { createDaemonMetrics, loadDaemonConfig } from '@damselfly/dfdaemon';
import { createSupernodeMetrics, loadSupernodeConfig } from '@damselfly/supernode';
import { tempDir } from './helpers/cluster.js';
import { metricsToken, operatorToken } from '@damselfly/shared';
import { CLUSTER_SECRET_FILE, TLS_DIR, findObject, lintChart, renderChart, type K8s } from './helpers/chart.js';

const SN = 'rel-damselfly-supernode';
const DF = 'rel-damselfly-dfdaemon';
const SECRET = 'rel-damselfly-cluster-secret';

interface Teardown {
  teardown(fn: () => unknown): void;
}

function configText(objs: K8s[], component: 'supernode' | 'dfdaemon'): string {
  return findObject(objs, 'ConfigMap', component === 'supernode' ? SN : DF).data![`${component}.yaml`]!;
}

/** A config file as the daemon sees it, parsed without the loader (for keys checked verbatim). */
function configOf(objs: K8s[], component: 'supernode' | 'dfdaemon'): Record<string, any> {
  return parseYaml(configText(objs, component)) as Record<string, any>;
}

function podSpec(objs: K8s[], kind: 'StatefulSet' | 'DaemonSet'): any {
  return findObject(objs, kind, kind === 'StatefulSet' ? SN : DF).spec.template.spec;
}

function secretValue(objs: K8s[], name = SECRET, key = 'secret'): string {
  return Buffer.from(findObject(objs, 'Secret', name).data![key]!, 'base64').toString();
}

/**
 * Writes a rendered config file for a loader, with the cluster secret file it names (a path inside the pod) moved
 * into a temp dir and holding the rendered Secret's value.
 */
async function localConfig(t: Teardown, objs: K8s[], component: 'supernode' | 'dfdaemon'): Promise<string> {
  const dir = await tempDir(t);
  const secretFile = join(dir, 'cluster-secret');
  await writeFile(secretFile, secretValue(objs), { mode: 0o600 });
  const file = join(dir, `${component}.yaml`);
  await writeFile(file, configText(objs, component).replaceAll(CLUSTER_SECRET_FILE, secretFile));
  return file;
}

/**
 * The supernode's config as pod 0 of the StatefulSet loads it: the ConfigMap's file, and the environment its pod spec
 * gives it (the advertise URL naming the pod, which clusterSupernodes must list).
 */
async function loadAsPod(t: Teardown, objs: K8s[]): Promise<ReturnType<typeof loadSupernodeConfig>> {
  const env: Record<string, string> = {};
  for (const e of podSpec(objs, 'StatefulSet').containers[0].env ?? []) if (typeof e.value === 'string') env[e.name] = e.value.replaceAll('$(POD_NAME)', `${SN}-0`);
  return loadSupernodeConfig({ file: await localConfig(t, objs, 'supernode'), env });
}

t.test('helm lint passes', async (t) => {
  t.match(await lintChart([]), /0 chart\(s\) failed/);
  t.match(
    await lintChart(['--set', 'tls.enabled=true', '--set', 'tls.secretName=damselfly-tls', '--set', 'clusterSecret.existingSecret=ops', '--set', 'serviceMonitor.enabled=true']),
    /0 chart\(s\) failed/,
    'with TLS, an existing secret and the ServiceMonitor',
  );
});

t.test('default render: supernode StatefulSet + Services + config, dfdaemon DaemonSet + config, cluster secret, containerd mirror', async (t) => {
  const objs = await renderChart([]);
  const kinds = objs.map((o) => `${o.kind}/${o.metadata.name}`).sort();
  t.same(kinds, [
    'ConfigMap/rel-damselfly-dfdaemon',
    'ConfigMap/rel-damselfly-supernode',
    'DaemonSet/rel-damselfly-dfdaemon',
    'Secret/rel-damselfly-cluster-secret',
    'Service/rel-damselfly-supernode',
    'Service/rel-damselfly-supernode-headless',
    'StatefulSet/rel-damselfly-supernode',
  ]);
  const sts = findObject(objs, 'StatefulSet', SN);
  t.equal(sts.spec.replicas, 3);
  t.equal(sts.spec.serviceName, 'rel-damselfly-supernode-headless');
  t.equal(sts.spec.volumeClaimTemplates[0].spec.resources.requests.storage, '100Gi', 'state on a PVC');
  const snPod = podSpec(objs, 'StatefulSet');
  t.same(snPod.containers[0].args, ['-c', '/config/supernode.yaml'], 'supernode settings come from its config file');
  t.ok(snPod.volumes.some((v: any) => v.name === 'config' && v.configMap?.name === SN), 'supernode ConfigMap mounted');
  t.equal(snPod.containers[0].readinessProbe.httpGet.path, '/healthy');
  t.equal(snPod.containers[0].readinessProbe.httpGet.scheme, 'HTTP');
  const snEnv = new Map<string, string>(snPod.containers[0].env.map((e: any) => [e.name, e.value]));
  t.equal(snEnv.get('SUPERNODE_ADVERTISE_URL'), 'http://$(POD_NAME).rel-damselfly-supernode-headless.infra.svc:8002');

  const pod = podSpec(objs, 'DaemonSet');
  t.equal(pod.hostNetwork, true);
  t.ok(pod.volumes.some((v: any) => v.name === 'cache' && v.hostPath?.path === '/var/lib/damselfly/dfdaemon'), 'hostPath cache');
  t.equal(pod.initContainers[0].name, 'containerd-mirror');
  t.ok(pod.volumes.some((v: any) => v.hostPath?.path === '/etc/containerd/certs.d'), 'writes into containerd certs.d');
  t.ok(pod.containers[0].resources.limits.memory, 'resources set');
  const dfEnv = new Map<string, string>(pod.containers[0].env.map((e: any) => [e.name, e.value]));
  t.equal(dfEnv.get('DFDAEMON_ADVERTISE_URL'), 'http://$(HOST_IP):65002');

  const cm = findObject(objs, 'ConfigMap', DF);
  t.match(cm.data!['write-hosts-toml.sh']!, /certs\.d\/docker\.io\/hosts\.toml[\s\S]*server = "https:\/\/registry-1\.docker\.io"[\s\S]*\[host\."http:\/\/127\.0\.0\.1:65001"\][\s\S]*capabilities = \["pull", "resolve"\]/);
  const cfg = loadDaemonConfig({ file: await localConfig(t, objs, 'dfdaemon') });
  t.equal(cfg.supernodes.length, 3, 'one URL per supernode replica');
  t.match(cfg.supernodes[2]!, /^http:\/\/rel-damselfly-supernode-2\.rel-damselfly-supernode-headless\.infra\.svc:8002$/);
  t.equal(cfg.proxyHost, '127.0.0.1', 'the proxy stays on loopback');
  t.equal(cfg.diskQuota, 50 * 1024 ** 3);
  t.same(cfg.registries, ['https://registry-1.docker.io']);

  const sn = await loadAsPod(t, objs);
  t.equal(sn.host, '0.0.0.0');
  t.equal(sn.port, 8002);
  t.equal(sn.dataDir, '/var/lib/damselfly/supernode');
  t.equal(sn.uploadSlots, 64);
  t.equal(sn.uploadStreamRate, 1024 * 1024, 'the supernode tunes its slots to its uplink');
  t.equal(sn.originRate, 0, 'no origin limit by default');
  t.same([cfg.uploadRate, cfg.downloadRate, cfg.backSourceRate], [0, 0, 0], 'no node limits by default');
  t.equal(sn.peerUploadSlots, 8);
  t.equal(sn.originConcurrency, 8);
  t.equal(sn.logLevel, 'info');
  t.same(sn.clusterSupernodes, cfg.supernodes, 'the supernodes know the replicas as the dfdaemons list them (preheat seeds each blob on its own)');
  t.equal(sn.advertiseUrl, cfg.supernodes[0], 'and pod 0 names itself as the list does');
  t.notOk(configOf(objs, 'supernode').tlsCert, 'no TLS by default');
  t.notOk(configOf(objs, 'dfdaemon').tlsCert, 'no TLS by default');

  // Every container: no privilege escalation, no capabilities, the default seccomp profile, a read-only root.
  for (const [name, c] of [['supernode', snPod.containers[0]], ['dfdaemon', pod.containers[0]], ['containerd-mirror', pod.initContainers[0]]] as const) {
    t.same(c.securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } }, `${name}: locked down`);
  }
  for (const p of [snPod, pod]) t.ok(p.volumes.some((v: any) => v.name === 'tmp' && v.emptyDir), 'a writable /tmp beside the read-only root');
  t.notOk(snPod.securityContext, 'no pod-level settings unless given');
});

t.test('values: replicas, registries, ServiceMonitor, mirror off', async (t) => {
  const objs = await renderChart([
    '--set', 'supernode.replicas=5',
    '--set', 'serviceMonitor.enabled=true',
    '--set', 'dfdaemon.containerdMirror.enabled=false',
    '--set', 'dfdaemon.registries={https://ghcr.io,http://registry.internal:5000}',
    '--set', 'dfdaemon.uploadRate=50MiB',
    '--set', 'dfdaemon.downloadRate=100MiB',
    '--set', 'supernode.originRate=200MiB',
    '--set', 'supernode.podSecurityContext.runAsUser=1000',
    '--set', 'supernode.podSecurityContext.fsGroup=1000',
  ]);
  t.equal(findObject(objs, 'StatefulSet', SN).spec.replicas, 5);
  t.same(podSpec(objs, 'StatefulSet').securityContext, { runAsUser: 1000, fsGroup: 1000 }, 'the supernode can run as another user');
  const sm = findObject(objs, 'ServiceMonitor', SN);
  t.notOk(sm.spec.endpoints[0].scheme, 'plain HTTP scrape without TLS');
  // Each supernode pod scraped once: the selector matches one of the two Services only.
  const selects = (svc: any) => Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => svc.metadata.labels[k] === v);
  t.same(objs.filter((o: any) => o.kind === 'Service' && selects(o)).map((o: any) => o.metadata.name), [SN], 'the ServiceMonitor selects one Service');
  t.same(sm.spec.endpoints[0].authorization, { type: 'Bearer', credentials: { name: 'rel-damselfly-cluster-secret', key: 'metrics-token' } }, 'and scrapes with the metrics token, neither the cluster secret nor the operator token');
  t.notOk(findObject(objs, 'StatefulSet', SN).spec.template.metadata.annotations['prometheus.io/scrape'], 'no scrape annotation for a scraper without the token');
  t.equal((await loadAsPod(t, objs)).metricsOpen, false);
  const open = await renderChart(['--set', 'serviceMonitor.enabled=true', '--set', 'supernode.metricsOpen=true']);
  t.notOk(findObject(open, 'ServiceMonitor', SN).spec.endpoints[0].authorization, 'metricsOpen: no token needed');
  t.equal(findObject(open, 'StatefulSet', SN).spec.template.metadata.annotations['prometheus.io/scrape'], 'true');
  t.equal((await loadAsPod(t, open)).metricsOpen, true, 'the supernode is told');
  const ds = findObject(objs, 'DaemonSet', DF);
  t.notOk(ds.spec.template.spec.initContainers, 'no init container when the mirror config is off');
  const cfg = loadDaemonConfig({ file: await localConfig(t, objs, 'dfdaemon') });
  t.equal(cfg.supernodes.length, 5);
  t.same(cfg.registries, ['https://ghcr.io', 'http://registry.internal:5000']);
  t.same([cfg.uploadRate, cfg.downloadRate, cfg.backSourceRate], [50 * 1024 ** 2, 100 * 1024 ** 2, 0], 'bandwidth limits reach the dfdaemon');
  t.equal((await loadAsPod(t, objs)).originRate, 200 * 1024 ** 2, 'and the supernode');
});

t.test('cluster secret: created with 48 random characters, mounted read-only in both workloads, named by both configs', async (t) => {
  const objs = await renderChart([]);
  const secret = findObject(objs, 'Secret', SECRET);
  t.equal(secret.type, 'Opaque');
  t.same(Object.keys(secret.data!), ['secret', 'operator-token', 'metrics-token'], 'clusterSecret.key, the operator token and the metrics token');
  const value = secretValue(objs);
  t.match(value, /^[A-Za-z0-9]{48}$/, '48 alphanumeric characters');
  t.equal(Buffer.from(secret.data!['operator-token']!, 'base64').toString(), operatorToken(Buffer.from(value)), 'the operator token the supernode derives from it');
  t.equal(Buffer.from(secret.data!['metrics-token']!, 'base64').toString(), metricsToken(Buffer.from(value)), 'and the metrics token the daemons derive from it');
  t.not(secretValue(await renderChart([])), value, 'random per fresh install (upgrades reuse the value via lookup)');

  const checksums: string[] = [];
  for (const kind of ['StatefulSet', 'DaemonSet'] as const) {
    const pod = podSpec(objs, kind);
    const vol = pod.volumes.find((v: any) => v.name === 'cluster-secret');
    t.equal(pod.automountServiceAccountToken, false, `${kind} mounts no service account token`);
    t.equal(vol?.secret?.secretName, SECRET, `${kind} mounts the chart's Secret`);
    t.same(vol.secret.items, [{ key: 'secret', path: 'cluster-secret' }], `${kind}: key secret as file cluster-secret`);
    const c = pod.containers[0];
    const mount = c.volumeMounts.find((m: any) => m.name === 'cluster-secret');
    t.equal(mount?.mountPath, '/etc/damselfly/secret', `${kind} mount path`);
    t.equal(mount.readOnly, true, `${kind} mounts it read-only`);
    t.notOk(
      c.env.some((e: any) => /CLUSTER_SECRET/.test(e.name) || e.valueFrom?.secretKeyRef),
      `${kind}: the secret is not in the environment`,
    );
    checksums.push(findObject(objs, kind, kind === 'StatefulSet' ? SN : DF).spec.template.metadata.annotations['checksum/cluster-secret']);
  }
  t.match(checksums[0], /^[0-9a-f]{16}$/, 'pods roll when the secret changes');
  t.equal(checksums[0], checksums[1], 'one secret value per render, the same in both workloads');

  t.equal(CLUSTER_SECRET_FILE, '/etc/damselfly/secret/cluster-secret');
  t.equal(configOf(objs, 'supernode').clusterSecretFile, CLUSTER_SECRET_FILE, 'supernode config names the file');
  t.equal(configOf(objs, 'dfdaemon').clusterSecretFile, CLUSTER_SECRET_FILE, 'dfdaemon config names the file');
});

t.test('clusterSecret.existingSecret: no Secret rendered, the operator\'s one mounted', async (t) => {
  const objs = await renderChart(['--set', 'clusterSecret.existingSecret=ops-damselfly', '--set', 'clusterSecret.key=token']);
  t.notOk(objs.some((o) => o.kind === 'Secret'), 'the chart creates no Secret');
  for (const kind of ['StatefulSet', 'DaemonSet'] as const) {
    const pod = podSpec(objs, kind);
    const vol = pod.volumes.find((v: any) => v.name === 'cluster-secret');
    t.equal(vol?.secret?.secretName, 'ops-damselfly', `${kind} mounts the operator's Secret`);
    t.same(vol.secret.items, [{ key: 'token', path: 'cluster-secret' }], `${kind} reads clusterSecret.key into the same file`);
    t.equal(pod.containers[0].volumeMounts.find((m: any) => m.name === 'cluster-secret')?.mountPath, '/etc/damselfly/secret');
  }
  t.equal(configOf(objs, 'supernode').clusterSecretFile, CLUSTER_SECRET_FILE);
  t.equal(configOf(objs, 'dfdaemon').clusterSecretFile, CLUSTER_SECRET_FILE);
});

t.test('supernode config: allowedOrigins = registries + proxyHosts + extras; CIDR lists from values', async (t) => {
  const objs = await renderChart([
    '--set', 'dfdaemon.registries={https://ghcr.io,http://registry.internal:5000}',
    '--set', 'dfdaemon.proxyHosts={blobs.example.com,*.s3.amazonaws.com:443}',
    '--set', 'supernode.allowedOrigins={https://mirror.example.org,https://ghcr.io}',
    '--set', 'supernode.originAllowCidrs={10.0.0.0/8}',
    '--set', 'supernode.advertiseCidrs={10.1.0.0/16,fd00::/8}',
  ]);
  const cfg = configOf(objs, 'supernode');
  t.same(
    cfg.allowedOrigins,
    ['https://ghcr.io', 'http://registry.internal:5000', 'blobs.example.com', '*.s3.amazonaws.com:443', 'https://mirror.example.org'],
    'registries, then proxy hosts, then extras, without duplicates',
  );
  t.same(cfg.originAllowCidrs, ['10.0.0.0/8']);
  t.same(cfg.advertiseCidrs, ['10.1.0.0/16', 'fd00::/8']);
  const loaded = await loadAsPod(t, objs);
  t.equal(loaded.port, 8002, "the supernode's loader accepts the patterns and CIDRs");

  const defaults = configOf(await renderChart([]), 'supernode');
  t.same(defaults.allowedOrigins, ['https://registry-1.docker.io'], 'by default: the default registry');
  t.same(defaults.originAllowCidrs, [], 'no private origin ranges unless asked');
  t.same(defaults.advertiseCidrs, []);
});

t.test('TLS: https everywhere, the TLS Secret mounted and named in both configs', async (t) => {
  await t.rejects(renderChart(['--set', 'tls.enabled=true']), /tls\.enabled needs tls\.secretName/, 'TLS without a Secret does not render');

  const objs = await renderChart(['--set', 'tls.enabled=true', '--set', 'tls.secretName=damselfly-tls', '--set', 'serviceMonitor.enabled=true']);
  const df = configOf(objs, 'dfdaemon');
  const urls = String(df.supernodes).split(',');
  t.equal(urls.length, 3);
  for (const [i, u] of urls.entries()) t.equal(u, `https://rel-damselfly-supernode-${i}.rel-damselfly-supernode-headless.infra.svc:8002`);

  for (const component of ['supernode', 'dfdaemon'] as const) {
    const cfg = configOf(objs, component);
    t.equal(cfg.tlsCert, `${TLS_DIR}/tls.crt`, `${component} tlsCert`);
    t.equal(cfg.tlsKey, `${TLS_DIR}/tls.key`, `${component} tlsKey`);
    t.equal(cfg.tlsCa, `${TLS_DIR}/ca.crt`, `${component} tlsCa`);
    t.equal(cfg.tlsClientAuth, true, `${component}: mutual TLS by default`);
    t.equal(cfg.clusterSecretFile, CLUSTER_SECRET_FILE, `${component} keeps the cluster secret`);
  }
  for (const kind of ['StatefulSet', 'DaemonSet'] as const) {
    const pod = podSpec(objs, kind);
    const vol = pod.volumes.find((v: any) => v.name === 'tls');
    t.equal(vol?.secret?.secretName, 'damselfly-tls', `${kind} mounts the TLS Secret`);
    t.same(vol.secret.items.map((i: any) => i.key).sort(), ['ca.crt', 'tls.crt', 'tls.key']);
    const mount = pod.containers[0].volumeMounts.find((m: any) => m.name === 'tls');
    t.equal(mount?.mountPath, TLS_DIR, `${kind} TLS mount path`);
    t.equal(mount.readOnly, true);
  }

  const snPod = podSpec(objs, 'StatefulSet');
  const snEnv = new Map<string, string>(snPod.containers[0].env.map((e: any) => [e.name, e.value]));
  t.equal(snEnv.get('SUPERNODE_ADVERTISE_URL'), 'https://$(POD_NAME).rel-damselfly-supernode-headless.infra.svc:8002');
  const dfEnv = new Map<string, string>(podSpec(objs, 'DaemonSet').containers[0].env.map((e: any) => [e.name, e.value]));
  t.equal(dfEnv.get('DFDAEMON_ADVERTISE_URL'), 'https://$(HOST_IP):65002');
  for (const probe of ['readinessProbe', 'livenessProbe']) {
    t.same(snPod.containers[0][probe].tcpSocket, { port: 'http' }, `${probe}: TCP only, the kubelet has no client certificate`);
    t.notOk(snPod.containers[0][probe].httpGet);
  }
  const ep = findObject(objs, 'ServiceMonitor', SN).spec.endpoints[0];
  t.equal(ep.scheme, 'https');
  t.same(ep.tlsConfig.ca.secret, { name: 'damselfly-tls', key: 'ca.crt' });
  t.same(ep.tlsConfig.keySecret, { name: 'damselfly-tls', key: 'tls.key' }, 'Prometheus presents a client certificate');

  const oneWay = await renderChart(['--set', 'tls.enabled=true', '--set', 'tls.secretName=damselfly-tls', '--set', 'tls.clientAuth=false']);
  t.equal(configOf(oneWay, 'supernode').tlsClientAuth, false);
  t.equal(configOf(oneWay, 'dfdaemon').tlsClientAuth, false);
  const c = podSpec(oneWay, 'StatefulSet').containers[0];
  for (const probe of ['readinessProbe', 'livenessProbe']) {
    t.same(c[probe].httpGet, { path: '/healthy', port: 'http', scheme: 'HTTPS' }, `${probe}: /healthy over HTTPS without client auth`);
  }
});

t.test('origin CAs: the same originCaFiles and originInsecureHosts in both configs, the ConfigMap mounted in both workloads', async (t) => {
  const objs = await renderChart([
    '--set', 'originTls.caConfigMap=origin-cas',
    '--set-json', 'originTls.caFiles={"registry.internal:5000":"internal-ca.pem"}',
    '--set-json', 'originTls.insecureHosts=["lab.example:5000"]',
  ]);
  for (const component of ['supernode', 'dfdaemon'] as const) {
    const cfg = configOf(objs, component);
    t.same(cfg.originCaFiles, { 'registry.internal:5000': '/etc/damselfly/origin-ca/internal-ca.pem' }, `${component}: the CA by origin host`);
    t.same(cfg.originInsecureHosts, ['lab.example:5000'], `${component}: the unchecked host`);
  }
  for (const kind of ['StatefulSet', 'DaemonSet'] as const) {
    const spec = podSpec(objs, kind);
    t.ok(spec.volumes.some((v: any) => v.name === 'origin-ca' && v.configMap?.name === 'origin-cas'), `${kind}: the ConfigMap is a volume`);
    t.ok(spec.containers[0].volumeMounts.some((m: any) => m.name === 'origin-ca' && m.mountPath === '/etc/damselfly/origin-ca' && m.readOnly), `${kind}: mounted read-only`);
  }
  const plain = await renderChart([]);
  t.notOk(configOf(plain, 'supernode').originCaFiles, 'nothing by default');
  t.notOk(podSpec(plain, 'DaemonSet').volumes.some((v: any) => v.name === 'origin-ca'));
});

t.test('Grafana dashboard: off by default; on, a ConfigMap with the sidecar label whose every metric exists', async (t) => {
  t.notOk((await renderChart([])).some((o) => o.kind === 'ConfigMap' && o.metadata.name.endsWith('grafana-dashboard')), 'off by default');
  const objs = await renderChart(['--set', 'grafanaDashboard.enabled=true']);
  const cm = findObject(objs, 'ConfigMap', 'rel-damselfly-grafana-dashboard');
  t.equal(cm.metadata.labels?.grafana_dashboard, '1', 'the label the Grafana sidecar watches');
  const dash = JSON.parse(cm.data!['damselfly.json']!) as { title: string; panels: { targets?: { expr: string }[] }[] };
  t.equal(dash.title, 'Damselfly');
  const known = new Set<string>();
  for (const m of [...(await createSupernodeMetrics().registry.getMetricsAsJSON()), ...(await createDaemonMetrics().registry.getMetricsAsJSON())]) known.add(m.name);
  const used = new Set(dash.panels.flatMap((p) => p.targets ?? []).flatMap((q) => q.expr.match(/damselfly_[a-z_]+/g) ?? []));
  t.ok(used.size >= 15, `${used.size} metrics charted`);
  for (const name of used) t.ok(known.has(name), `${name} is a metric the daemons export`);
});

t.test("dfdaemon metrics on the network: the node's IP and a port, scraped by a PodMonitor with the operator token over TLS", async (t) => {
  const off = await renderChart(['--set', 'serviceMonitor.enabled=true']);
  t.notOk(off.some((o) => o.kind === 'PodMonitor'), 'off by default: no PodMonitor');
  t.equal(loadDaemonConfig({ file: await localConfig(t, off, 'dfdaemon') }).metricsHost, '', 'and no listener beyond the loopback health port');

  const objs = await renderChart(['--set', 'serviceMonitor.enabled=true', '--set', 'dfdaemon.metrics.enabled=true', '--set', 'tls.enabled=true', '--set', 'tls.secretName=damselfly-tls']);
  const pod = podSpec(objs, 'DaemonSet');
  const env = new Map<string, string>(pod.containers[0].env.map((e: any) => [e.name, e.value]));
  t.equal(env.get('DFDAEMON_METRICS_HOST'), '$(HOST_IP)', 'bound to the node IP the pod shares, not every interface');
  t.same(pod.containers[0].ports.find((p: any) => p.name === 'metrics'), { name: 'metrics', containerPort: 40902, hostPort: 40902 });
  // (Loaded from a render without TLS: the certificate files exist only in the pod.)
  const plain = await renderChart(['--set', 'dfdaemon.metrics.enabled=true']);
  const cfg = loadDaemonConfig({ file: await localConfig(t, plain, 'dfdaemon'), env: { DFDAEMON_METRICS_HOST: '10.0.0.7' } });
  t.same([cfg.metricsHost, cfg.metricsPort], ['10.0.0.7', 40902], 'the dfdaemon is told');
  const pm = findObject(objs, 'PodMonitor', DF);
  const labels = findObject(objs, 'DaemonSet', DF).spec.template.metadata.labels;
  t.ok(Object.entries(pm.spec.selector.matchLabels).every(([k, v]) => labels[k] === v), "it selects the dfdaemons' pods");
  const ep = pm.spec.podMetricsEndpoints[0];
  t.equal(ep.port, 'metrics');
  t.same(ep.authorization, { type: 'Bearer', credentials: { name: 'rel-damselfly-cluster-secret', key: 'metrics-token' } }, 'with the metrics token, never the operator token');
  t.equal(ep.scheme, 'https');
  t.same(ep.tlsConfig.ca.secret, { name: 'damselfly-tls', key: 'ca.crt' });
  t.same(ep.tlsConfig.keySecret, { name: 'damselfly-tls', key: 'tls.key' }, 'presenting the client certificate mutual TLS asks for');
  t.match(await lintChart(['--set', 'serviceMonitor.enabled=true', '--set', 'dfdaemon.metrics.enabled=true']), /0 chart\(s\) failed/);
});
