/** The Helm chart rendered by the real helm binary (3.17, unpacked by scripts/install.sh --test), as plain objects. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ROOT } from './cluster.js';

const run = promisify(execFile);

export const HELM = join(ROOT, 'node_modules/.cache/helm/helm/helm');
export const CHART = join(ROOT, 'charts/damselfly');
/** Release and namespace every render uses: object names start with `rel-damselfly-`, DNS names end in `.infra.svc`. */
export const RELEASE = 'rel';
export const NAMESPACE = 'infra';

/** Where the chart mounts the cluster secret and the TLS files, in both the supernode and the dfdaemon pods. */
export const CLUSTER_SECRET_FILE = '/etc/damselfly/secret/cluster-secret';
export const TLS_DIR = '/etc/damselfly/tls';

/** One rendered Kubernetes object; `spec` stays untyped (pod specs are checked field by field). */
export interface K8s {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  type?: string;
  spec?: any;
  /** ConfigMap text, or Secret values base64-encoded. */
  data?: Record<string, string>;
}

/** `helm template rel <chart> --namespace infra ...args`; rejects (with helm's stderr in the message) if rendering fails. */
export async function renderChart(args: string[]): Promise<K8s[]> {
  const { stdout } = await run(HELM, ['template', RELEASE, CHART, '--namespace', NAMESPACE, ...args], { maxBuffer: 1 << 24 });
  const docs = parseAllDocuments(stdout);
  const objs: K8s[] = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`helm rendered invalid YAML: ${d.errors[0]!.message}`);
    const obj = d.toJS() as K8s | null;
    if (obj) objs.push(obj);
  }
  return objs;
}

/** `helm lint <chart> ...args`; resolves with its output, rejects if the chart fails. */
export async function lintChart(args: string[]): Promise<string> {
  const { stdout } = await run(HELM, ['lint', CHART, ...args]);
  return stdout;
}

/** The object of that kind and name; throws listing what was rendered if there is none. */
export function findObject(objs: K8s[], kind: string, name: string): K8s {
  const obj = objs.find((o) => o.kind === kind && o.metadata.name === name);
  if (!obj) throw new Error(`no ${kind}/${name} among ${objs.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')}`);
  return obj;
}
