import {
  MAX_PIECE_SIZE,
  MIN_PIECE_SIZE,
  badCidrs,
  badOriginPatterns,
  cacheSchema,
  checkCacheConfig,
  type CacheConfig,
  commonSchema,
  type CommonConfig,
  loadConfig,
  OriginTls,
  originTlsSchema,
  type OriginTlsConfig,
  resolveTrust,
  trustSchema,
  type ConfigSources,
  type Schema,
  type Trust,
  type TrustConfig,
} from '@damselfly/shared';

const MIB = 1024 * 1024;

/** Supernode settings. Every field can come from the YAML file, an environment variable or a flag. */
export interface SupernodeConfig extends TrustConfig, CommonConfig, CacheConfig {
  /** Address to listen on. */
  host: string;
  port: number;
  /** Where task metadata (level) and seeded pieces live. */
  dataDir: string;
  /** How many origin requests may run at once (across tasks and origins). */
  originConcurrency: number;
  /** How many of them one origin host may have: a slow origin cannot take every slot. */
  originConcurrencyPerHost: number;
  /** Slowest acceptable origin transfer, bytes per second (after 10 s), and the longest one piece may take. */
  originMinRate: number;
  originTimeoutSeconds: number;
  /** Most bytes per second fetched from all origins together (0 = no limit). */
  originRate: number;
  /** Most pieces the supernode serves at once before the scheduler stops sending peers to it. */
  uploadSlots: number;
  /**
   * Bytes/s each of its upload streams should get: the supernode serves as few pieces at once as keep its uplink full
   * at this rate per stream (between 4 and uploadSlots), measured as it goes; 0 = always uploadSlots.
   */
  uploadStreamRate: number;
  /** How many pieces one peer may upload at once (the scheduler's per-peer load limit). */
  peerUploadSlots: number;
  /** Smallest piece a blob is cut into (about 100 pieces per blob otherwise; see pieceSizeFor). */
  minPieceSize: number;
  /** Piece download failures (timeouts, errors) from one peer before it is blacklisted for the task. */
  failuresBeforeBlacklist: number;
  /** Base URL peers use to reach this supernode's piece API; defaults to http://<host>:<port>. */
  advertiseUrl: string | undefined;
  /** Every supernode of the cluster, this one included, spelt as the dfdaemons' `supernodes` (empty: this one alone). */
  clusterSupernodes: string[];
  /** Origins the supernode may seed from (patterns); nothing else is fetched. */
  allowedOrigins: string[];
  /** Origin addresses allowed although loopback/private/link-local (an in-cluster registry). */
  originAllowCidrs: string[];
  /** Addresses a peer may advertise for its upload server besides the address its session comes from. */
  advertiseCidrs: string[];
  /** Tasks one peer session may join. */
  sessionMaxTasks: number;
  /** Requests per second one peer session may send (bursts of twice that). */
  sessionRate: number;
  metricsOpen: boolean;
  logLevel: string;
  /** Resolved secret and TLS material (not a setting: derived from the trust settings at load time). */
  trust: Trust;
  /** CA bundles and unchecked hosts for origins, per host (resolved from originCaFiles/originInsecureHosts). */
  originTls: OriginTls;
  originCaFiles: Record<string, string>;
  originInsecureHosts: string[];
}

export const supernodeSchema: Schema = {
  host: { type: 'string', default: '0.0.0.0', env: 'SUPERNODE_HOST', doc: 'listen address' },
  port: { type: 'int', default: 8002, min: 0, max: 65535, env: 'SUPERNODE_PORT', doc: 'REST + ws + metrics port' },
  dataDir: { type: 'string', default: '/var/lib/damselfly/supernode', env: 'SUPERNODE_DATA_DIR', doc: 'task metadata and seeded pieces' },
  originConcurrency: { type: 'int', default: 64, min: 1, max: 1024, env: 'SUPERNODE_ORIGIN_CONCURRENCY', doc: 'origin requests in flight, all origins' },
  originConcurrencyPerHost: { type: 'int', default: 8, min: 1, max: 1024, env: 'SUPERNODE_ORIGIN_CONCURRENCY_PER_HOST', doc: 'origin requests in flight to one origin host' },
  originMinRate: { type: 'size', default: 64 * 1024, min: 0, env: 'SUPERNODE_ORIGIN_MIN_RATE', doc: 'slowest acceptable origin transfer per second, after 10 s (0 = any)' },
  originRate: { type: 'size', default: 0, min: 0, env: 'SUPERNODE_ORIGIN_RATE', doc: 'most bytes per second fetched from all origins together, e.g. 200MiB (0 = no limit)' },
  originTimeoutSeconds: { type: 'int', default: 300, min: 1, max: 86_400, env: 'SUPERNODE_ORIGIN_TIMEOUT_SECONDS', doc: 'longest one piece may take from the origin' },
  uploadSlots: { type: 'int', default: 64, min: 1, max: 4096, env: 'SUPERNODE_UPLOAD_SLOTS', doc: 'most pieces served at once by the supernode' },
  uploadStreamRate: { type: 'size', default: 1024 * 1024, min: 0, env: 'SUPERNODE_UPLOAD_STREAM_RATE', doc: 'rate each upload stream should get, e.g. 1MiB: serve as few pieces at once as fill the uplink (0 = always uploadSlots)' },
  minPieceSize: { type: 'size', default: MIN_PIECE_SIZE, min: MIN_PIECE_SIZE, max: MAX_PIECE_SIZE, env: 'SUPERNODE_MIN_PIECE_SIZE', doc: 'smallest piece, e.g. 4MiB: blobs are cut into about 100 pieces of whole MiB, none smaller than this (whole MiB)' },
  peerUploadSlots: { type: 'int', default: 8, min: 1, max: 1024, env: 'SUPERNODE_PEER_UPLOAD_SLOTS', doc: 'pieces one peer uploads at once' },
  failuresBeforeBlacklist: { type: 'int', default: 3, min: 1, max: 100, doc: 'timeouts/errors before a peer is blacklisted for a task' },
  advertiseUrl: { type: 'url', env: 'SUPERNODE_ADVERTISE_URL', doc: 'URL this supernode names itself by (start-up log, run.sh); peers fetch its pieces where they connected to it. Unset: scheme://host:port, with this host\'s first non-internal IPv4 address (a global IPv6 one on a host without) for a host of 0.0.0.0 or ::' },
  clusterSupernodes: { type: 'urls', default: [], env: 'SUPERNODE_CLUSTER_SUPERNODES', doc: 'every supernode of the cluster, this one included, spelt as in the dfdaemons\' supernodes setting: a preheat then seeds each blob on the supernode the dfdaemons ask for it, and any supernode answers for any job (needs advertiseUrl, spelt as in this list)' },
  allowedOrigins: { type: 'strings', default: [], env: 'SUPERNODE_ALLOWED_ORIGINS', doc: 'origins to seed from: https://host[:port], host[:port], *.domain or * (empty = none)' },
  originAllowCidrs: { type: 'strings', default: [], env: 'SUPERNODE_ORIGIN_ALLOW_CIDRS', doc: 'origin address ranges allowed although loopback/private/link-local' },
  advertiseCidrs: { type: 'strings', default: [], env: 'SUPERNODE_ADVERTISE_CIDRS', doc: 'upload addresses peers may advertise besides their own' },
  sessionMaxTasks: { type: 'int', default: 4096, min: 1, max: 1_000_000, env: 'SUPERNODE_SESSION_MAX_TASKS', doc: 'tasks one peer session may join' },
  sessionRate: { type: 'int', default: 500, min: 1, max: 100_000, env: 'SUPERNODE_SESSION_RATE', doc: 'requests per second one peer session may send' },
  metricsOpen: { type: 'bool', default: false, env: 'SUPERNODE_METRICS_OPEN', doc: 'serve /metrics without a token (for a scraper that cannot send one); with a cluster secret it wants the metrics token (dfctl token --metrics: it reads metrics and nothing else) or the operator token as an Authorization: Bearer token otherwise' },
  ...cacheSchema('SUPERNODE', 7 * 24 * 3600),
  ...commonSchema,
  ...trustSchema,
  ...originTlsSchema,
  logLevel: { type: 'string', default: 'info', env: 'DAMSELFLY_LOG_LEVEL', oneOf: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], doc: 'pino log level' },
};

export function loadSupernodeConfig(sources: ConfigSources): Readonly<SupernodeConfig> {
  return loadConfig<SupernodeConfig>(supernodeSchema, sources, (v, errors) => {
    checkCacheConfig(v, errors);
    // Pieces are whole MiB (so whole 256 KiB blocks, the unit of verification and relaying).
    if (typeof v.minPieceSize === 'number' && v.minPieceSize % MIB !== 0) errors.push(`minPieceSize: must be a whole number of MiB, e.g. 4MiB, got ${v.minPieceSize} bytes`);
    const cluster = (v.clusterSupernodes as string[] | undefined) ?? [];
    if (cluster.length && !cluster.includes(String(v.advertiseUrl))) {
      errors.push(`clusterSupernodes: must list this supernode as advertiseUrl names it (${v.advertiseUrl === undefined ? 'advertiseUrl is not set' : `advertiseUrl is ${String(v.advertiseUrl)}`})`);
    }
    for (const p of badOriginPatterns((v.allowedOrigins as string[] | undefined) ?? [])) errors.push(`allowedOrigins: not an origin pattern: ${JSON.stringify(p)}`);
    for (const key of ['originAllowCidrs', 'advertiseCidrs'] as const) {
      for (const c of badCidrs((v[key] as string[] | undefined) ?? [])) errors.push(`${key}: not a CIDR: ${JSON.stringify(c)}`);
    }
    return { trust: resolveTrust(v as unknown as TrustConfig, { host: String(v.host ?? '') }, errors), originTls: new OriginTls(v as unknown as OriginTlsConfig, errors) };
  });
}
