import { hostname } from 'node:os';
import { engineSchema } from '@damselfly/peer';
import { cacheSchema, checkCacheConfig, commonSchema, loadConfig, OriginTls, originTlsSchema, type OriginTlsConfig, type CacheConfig, resolveTrust, trustSchema, type CommonConfig, type ConfigSources, type Schema, type Trust, type TrustConfig } from '@damselfly/shared';

/** dfdaemon settings. Every field can come from the YAML file, an environment variable or a flag. */
export interface DaemonConfig extends TrustConfig, CommonConfig, CacheConfig {
  /** Supernodes to use; tasks are spread across them by rendezvous hashing of the task id. */
  supernodes: string[];
  dataDir: string;
  /** Registry mirror / forward proxy. Loopback by default: an open proxy on a node is a liability. */
  proxyHost: string;
  proxyPort: number;
  /** Upload server other peers fetch pieces from. */
  uploadHost: string;
  uploadPort: number;
  /** URL peers use to reach the upload server; default http://<first non-internal IPv4>:<uploadPort>. */
  advertiseUrl: string | undefined;
  /** `/server/ping` (nydusd ping_url) and `/metrics`. */
  healthHost: string;
  healthPort: number;
  /** A second `/metrics` listener for a scraper on the network ('' = none). */
  metricsHost: string;
  metricsPort: number;
  peerId: string;
  labels: Record<string, string>;
  /** Pieces downloaded at once per task. */
  parallelPieces: number;
  /** Pieces uploaded at once to other peers. */
  uploadSlots: number;
  /** Bandwidth limits, bytes/s (0 = none): uploads to peers; all downloads; the node's own origin fetches. */
  uploadRate: number;
  downloadRate: number;
  backSourceRate: number;
  pieceTimeoutMs: number;
  /** Slowest acceptable piece source, bytes per second (0 = any). */
  pieceMinRate: number;
  /** Go to the origin directly when no supernode answers. */
  backSource: boolean;
  /** Upstream registries. The first is where origin-form mirror requests go without `?ns=` / X-Dragonfly-Registry. */
  registries: string[];
  /** Extra hosts (host or host:port, `*` for any) the forward proxy serves besides the registries. */
  proxyHosts: string[];
  /** After a Range read, fetch the rest of the blob in the background. */
  prefetch: boolean;
  /** How long a client's proven access to a private blob is remembered (per credentials, repository and digest). */
  accessCacheSeconds: number;
  logLevel: string;
  /** Resolved secret and TLS material (derived from the trust settings at load time). */
  trust: Trust;
  /** CA bundles and unchecked hosts for origins, per host (resolved from originCaFiles/originInsecureHosts). */
  originTls: OriginTls;
  originCaFiles: Record<string, string>;
  originInsecureHosts: string[];
}

export const daemonSchema: Schema = {
  supernodes: { type: 'urls', default: [], env: 'DFDAEMON_SUPERNODES', doc: 'supernode base URLs, comma separated' },
  dataDir: { type: 'string', default: '/var/lib/damselfly/dfdaemon', env: 'DFDAEMON_DATA_DIR', doc: 'piece cache and index' },
  proxyHost: { type: 'string', default: '127.0.0.1', env: 'DFDAEMON_PROXY_HOST', doc: 'mirror/proxy listen address' },
  proxyPort: { type: 'int', default: 65001, min: 0, max: 65535, env: 'DFDAEMON_PROXY_PORT', doc: 'mirror/proxy port' },
  uploadHost: { type: 'string', default: '0.0.0.0', env: 'DFDAEMON_UPLOAD_HOST', doc: 'upload server listen address' },
  uploadPort: { type: 'int', default: 65002, min: 0, max: 65535, env: 'DFDAEMON_UPLOAD_PORT', doc: 'upload server port' },
  advertiseUrl: { type: 'url', env: 'DFDAEMON_ADVERTISE_URL', doc: 'URL other peers use for this upload server; unset: scheme://uploadHost:uploadPort, with this host\'s first non-internal IPv4 address (a global IPv6 one on a host without) for an uploadHost of 0.0.0.0 or ::' },
  healthHost: { type: 'string', default: '127.0.0.1', env: 'DFDAEMON_HEALTH_HOST', doc: 'health/metrics listen address' },
  healthPort: { type: 'int', default: 40901, min: 0, max: 65535, env: 'DFDAEMON_HEALTH_PORT', doc: '/server/ping and /metrics port' },
  metricsHost: { type: 'string', default: '', env: 'DFDAEMON_METRICS_HOST', doc: 'listen address of /metrics for a scraper on the network (over the cluster\'s TLS, wanting the metrics token (dfctl token --metrics) when there is a cluster secret); empty: /metrics only on the health port' },
  metricsPort: { type: 'int', default: 40902, min: 0, max: 65535, env: 'DFDAEMON_METRICS_PORT', doc: 'port of that /metrics listener' },
  peerId: { type: 'string', default: `${hostname()}-${process.pid}`, env: 'DFDAEMON_PEER_ID', doc: 'unique id of this peer' },
  labels: { type: 'labels', default: {}, env: 'DFDAEMON_LABELS', doc: 'topology labels, k=v,k=v' },
  ...engineSchema,
  uploadSlots: { type: 'int', default: 8, min: 1, max: 1024, env: 'DFDAEMON_UPLOAD_SLOTS', doc: 'pieces uploaded at once' },
  uploadRate: { type: 'size', default: 0, min: 0, env: 'DFDAEMON_UPLOAD_RATE', doc: 'most bytes per second uploaded to other peers, e.g. 50MiB (0 = no limit)' },
  registries: { type: 'urls', default: [], env: 'DFDAEMON_REGISTRIES', doc: 'upstream registries, comma separated; the first is the mirror default' },
  proxyHosts: { type: 'strings', default: [], env: 'DFDAEMON_PROXY_HOSTS', doc: 'other hosts the forward proxy serves (* = any)' },
  prefetch: { type: 'bool', default: false, env: 'DFDAEMON_PREFETCH', doc: 'after a Range read, fetch the rest of the blob' },
  ...cacheSchema('DFDAEMON', 0),
  accessCacheSeconds: { type: 'int', default: 60, min: 0, max: 86_400, env: 'DFDAEMON_ACCESS_CACHE_SECONDS', doc: 'how long a proven access to a private blob is remembered' },
  ...commonSchema,
  ...trustSchema,
  ...originTlsSchema,
  logLevel: { type: 'string', default: 'info', env: 'DAMSELFLY_LOG_LEVEL', oneOf: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], doc: 'pino log level' },
};

export function loadDaemonConfig(sources: ConfigSources): Readonly<DaemonConfig> {
  return loadConfig<DaemonConfig>(daemonSchema, sources, (v, errors) => {
    checkCacheConfig(v, errors);
    // Every listener other hosts may reach: without a cluster secret (and not insecure) each must stay on loopback.
    const listen = { uploadHost: String(v.uploadHost ?? ''), proxyHost: String(v.proxyHost ?? ''), ...(v.metricsHost ? { metricsHost: String(v.metricsHost) } : {}) };
    return { trust: resolveTrust(v as unknown as TrustConfig, listen, errors), originTls: new OriginTls(v as unknown as OriginTlsConfig, errors) };
  });
}
