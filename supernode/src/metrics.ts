import { Counter, Gauge, Histogram } from 'prom-client';
import { createRegistry } from '@damselfly/shared';

export function createSupernodeMetrics() {
  const registry = createRegistry('damselfly_supernode');
  const registers = [registry];
  return {
    registry,
    originBytes: new Counter({ name: 'damselfly_supernode_origin_bytes_total', help: 'Bytes fetched from origins', registers }),
    servedBytes: new Counter({ name: 'damselfly_supernode_served_bytes_total', help: 'Piece bytes served to peers', registers }),
    originRateLimit: new Gauge({ name: 'damselfly_supernode_origin_rate_limit_bytes', help: 'Origin bandwidth limit in effect, bytes/s (0 = none)', registers }),
    uploadSlots: new Gauge({ name: 'damselfly_supernode_upload_slots', help: 'Pieces the supernode serves at once now (tuned to its measured uplink)', registers }),
    servedPieces: new Counter({ name: 'damselfly_supernode_served_pieces_total', help: 'Pieces served to peers', registers }),
    pieceErrors: new Counter({ name: 'damselfly_supernode_piece_errors_total', help: 'Piece requests that failed', labelNames: ['code'], registers }),
    blacklisted: new Counter({ name: 'damselfly_supernode_blacklisted_total', help: 'Peers blacklisted for a task', labelNames: ['reason'], registers }),
    peers: new Gauge({ name: 'damselfly_supernode_peers', help: 'Connected peers', registers }),
    rejected: new Counter({ name: 'damselfly_supernode_rejected_total', help: 'Requests and messages refused (auth, grants, limits)', labelNames: ['why'], registers }),
    reports: new Counter({ name: 'damselfly_supernode_piece_reports_total', help: 'piece:result reports by verdict', labelNames: ['verdict'], registers }),
    cacheBytes: new Gauge({ name: 'damselfly_supernode_cache_bytes', help: 'Bytes of seeded pieces on disk', registers }),
    cacheTasks: new Gauge({ name: 'damselfly_supernode_cache_tasks', help: 'Tasks on disk', registers }),
    cacheQuota: new Gauge({ name: 'damselfly_supernode_cache_quota_bytes', help: 'Disk quota in effect (diskQuota, or half the filesystem)', registers }),
    evictions: new Counter({ name: 'damselfly_supernode_evictions_total', help: 'Tasks evicted by GC', labelNames: ['why'], registers }),
    diskFull: new Counter({ name: 'damselfly_supernode_disk_full_total', help: 'Seed attempts that ran out of disk (the cache is shrunk before the next; attempts failing together share one GC pass)', registers }),
    openFiles: new Gauge({ name: 'damselfly_supernode_open_data_files', help: 'Task data files open now (bounded)', registers }),
    digestBytes: new Counter({
      name: 'damselfly_supernode_digest_bytes_total',
      help: 'Bytes fed to whole-blob digest checks: inline (from the block just hashed) or read back from disk',
      labelNames: ['how'],
      registers,
    }),
    digestMismatches: new Counter({ name: 'damselfly_supernode_digest_mismatches_total', help: 'Tasks dropped because the origin bytes did not match the digest', registers }),
    scheduleSeconds: new Histogram({
      name: 'damselfly_supernode_schedule_seconds',
      help: 'Time to choose the sources a peer can have at once for the pieces it wants: in a pieces:want (reply) or a registration stating a Range read (register)',
      labelNames: ['how'] as const,
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1],
      registers,
    }),
    assignments: new Counter({
      name: 'damselfly_supernode_assignments_total',
      help: 'Piece sources assigned to peers: in the reply to pieces:want (reply) or to a registration stating a Range read (register), or pushed later as sources became possible (pushed)',
      labelNames: ['how'] as const,
      registers,
    }),
  };
}

export type SupernodeMetrics = ReturnType<typeof createSupernodeMetrics>;
