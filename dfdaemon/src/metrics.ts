import { Counter, Gauge, Histogram } from 'prom-client';
import { createRegistry } from '@damselfly/shared';
import { createPeerMetrics } from '@damselfly/peer';

export function createDaemonMetrics() {
  const registry = createRegistry('damselfly_dfdaemon');
  const registers = [registry];
  /** Read at scrape time: how long each bandwidth limit has held transfers back so far. */
  const limitWaits = new Map<string, () => number>();
  return {
    limitWaits,
    registry,
    ...createPeerMetrics(registry),
    uploadBytes: new Counter({ name: 'damselfly_dfdaemon_upload_bytes_total', help: 'Piece bytes uploaded to other peers', registers }),
    proxyRequests: new Counter({ name: 'damselfly_dfdaemon_proxy_requests_total', help: 'Proxy requests', labelNames: ['kind', 'status'], registers }),
    cacheBytes: new Gauge({ name: 'damselfly_dfdaemon_cache_bytes', help: 'Bytes of verified pieces in the cache', registers }),
    cacheTasks: new Gauge({ name: 'damselfly_dfdaemon_cache_tasks', help: 'Tasks in the cache', registers }),
    evictions: new Counter({ name: 'damselfly_dfdaemon_evictions_total', help: 'Tasks evicted by GC', labelNames: ['why'], registers }),
    cacheQuota: new Gauge({ name: 'damselfly_dfdaemon_cache_quota_bytes', help: 'Cache quota in effect (diskQuota, or half the filesystem)', registers }),
    relayedPieces: new Counter({
      name: 'damselfly_dfdaemon_relayed_pieces_total',
      help: 'Pieces sent to other peers while this node was still fetching them (block by block)',
      registers,
    }),
    rateLimit: new Gauge({ name: 'damselfly_dfdaemon_rate_limit_bytes', help: 'Bandwidth limits in effect, bytes/s (0 = none)', labelNames: ['direction'], registers }),
    rateLimitWait: new Gauge({
      name: 'damselfly_dfdaemon_rate_limit_wait_seconds',
      help: 'Time transfers were held back by a bandwidth limit, summed over transfers',
      labelNames: ['direction'],
      registers,
      collect() {
        for (const [direction, read] of limitWaits) this.set({ direction }, read());
      },
    }),
    preheats: new Counter({ name: 'damselfly_dfdaemon_preheat_blobs_total', help: 'Blobs fetched because an operator preheated them on every node, by result', labelNames: ['result'], registers }),
    diskFull: new Counter({ name: 'damselfly_dfdaemon_disk_full_total', help: 'Downloads that ran out of disk (the task is dropped and the cache shrunk)', registers }),
    uploadsActive: new Gauge({ name: 'damselfly_dfdaemon_uploads_active', help: 'Pieces being uploaded now', registers }),
    uploadRefused: new Counter({ name: 'damselfly_dfdaemon_upload_refused_total', help: 'Piece requests refused for a missing or invalid grant', registers }),
    accessChecks: new Counter({ name: 'damselfly_dfdaemon_access_checks_total', help: 'Client access checks for private blobs, by result', labelNames: ['result'], registers }),
    accessCheckRequests: new Counter({ name: 'damselfly_dfdaemon_access_check_origin_requests_total', help: 'Origin requests made by access checks (token dance included)', registers }),
    accessCheckSeconds: new Histogram({
      name: 'damselfly_dfdaemon_access_check_seconds',
      help: 'Time to check a client\'s access with the origin (uncached)',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
  };
}

export type DaemonMetrics = ReturnType<typeof createDaemonMetrics>;
