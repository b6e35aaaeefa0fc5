/**
 * The Helm chart, rendered by real helm: lint, the objects an operator expects, and the dfdaemon config it writes
 * accepted by dfdaemon's own config loader.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { parseAllDocuments } from 'yaml';
import { loadDaemonConfig } from '@damselfly/dfdaemon';
import { ROOT, tempDir } from './helpers/cluster.js';

const run = promisify(execFile);
const helm = join(ROOT, 'node_modules/.cache/helm/helm/helm');
const chart = join(ROOT, 'charts/damselfly');

interface K8s {
  kind: string;
  metadata: { name: string };
  spec?: any;
  data?: Record<string, string>;
}

async function render(args: string[] = []): Promise<K8s[]> {
  const { stdout } = await run(helm, ['template', 'rel', chart, '--namespace', 'infra', ...args], { maxBuffer: 1 << 24 });
  return parseAllDocuments(stdout)
    .map((d) => d.toJS() as K8s)
    .filter(Boolean);
}

t.test('helm lint passes', async (t) => {
  const { stdout } = await run(helm, ['lint', chart]);
  t.match(stdout, /0 chart\(s\) failed/);
});

t.test('default render: supernode StatefulSet + Services, dfdaemon DaemonSet + config, containerd mirror', async (t) => {
  const objs = await render();
  const kinds = objs.map((o) => `${o.kind}/${o.metadata.name}`).sort();
  t.same(kinds, ['ConfigMap/rel-damselfly-dfdaemon', 'DaemonSet/rel-damselfly-dfdaemon', 'Service/rel-damselfly-supernode', 'Service/rel-damselfly-supernode-headless', 'StatefulSet/rel-damselfly-supernode']);
  const sts = objs.find((o) => o.kind === 'StatefulSet')!;
  t.equal(sts.spec.replicas, 3);
  t.equal(sts.spec.serviceName, 'rel-damselfly-supernode-headless');
  t.equal(sts.spec.volumeClaimTemplates[0].spec.resources.requests.storage, '100Gi', 'state on a PVC');
  const ds = objs.find((o) => o.kind === 'DaemonSet')!;
  const pod = ds.spec.template.spec;
  t.equal(pod.hostNetwork, true);
  t.ok(pod.volumes.some((v: any) => v.name === 'cache' && v.hostPath?.path === '/var/lib/damselfly/dfdaemon'), 'hostPath cache');
  t.equal(pod.initContainers[0].name, 'containerd-mirror');
  t.ok(pod.volumes.some((v: any) => v.hostPath?.path === '/etc/containerd/certs.d'), 'writes into containerd certs.d');
  t.ok(pod.containers[0].resources.limits.memory, 'resources set');

  const cm = objs.find((o) => o.kind === 'ConfigMap')!;
  t.match(cm.data!['write-hosts-toml.sh']!, /certs\.d\/docker\.io\/hosts\.toml[\s\S]*server = "https:\/\/registry-1\.docker\.io"[\s\S]*\[host\."http:\/\/127\.0\.0\.1:65001"\][\s\S]*capabilities = \["pull", "resolve"\]/);
  const dir = await tempDir(t);
  const file = join(dir, 'dfdaemon.yaml');
  await writeFile(file, cm.data!['dfdaemon.yaml']!);
  const cfg = loadDaemonConfig({ file });
  t.equal(cfg.supernodes.length, 3, 'one URL per supernode replica');
  t.match(cfg.supernodes[2]!, /^http:\/\/rel-damselfly-supernode-2\.rel-damselfly-supernode-headless\.infra\.svc:8002$/);
  t.equal(cfg.proxyHost, '127.0.0.1', 'the proxy stays on loopback');
  t.equal(cfg.diskQuota, 50 * 1024 ** 3);
  t.same(cfg.registries, ['https://registry-1.docker.io']);
});

t.test('values: replicas, registries, ServiceMonitor, mirror off', async (t) => {
  const objs = await render([
    '--set', 'supernode.replicas=5',
    '--set', 'serviceMonitor.enabled=true',
    '--set', 'dfdaemon.containerdMirror.enabled=false',
    '--set', 'dfdaemon.registries={https://ghcr.io,http://registry.internal:5000}',
  ]);
  t.equal(objs.find((o) => o.kind === 'StatefulSet')!.spec.replicas, 5);
  t.ok(objs.find((o) => o.kind === 'ServiceMonitor'), 'ServiceMonitor rendered');
  const ds = objs.find((o) => o.kind === 'DaemonSet')!;
  t.notOk(ds.spec.template.spec.initContainers, 'no init container when the mirror config is off');
  const dir = await tempDir(t);
  const file = join(dir, 'dfdaemon.yaml');
  await writeFile(file, objs.find((o) => o.kind === 'ConfigMap')!.data!['dfdaemon.yaml']!);
  const cfg = loadDaemonConfig({ file });
  t.equal(cfg.supernodes.length, 5);
  t.same(cfg.registries, ['https://ghcr.io', 'http://registry.internal:5000']);
});
