import { Counter, Gauge } from 'prom-client';
import { createRegistry } from '@damselfly/shared';

export function createDaemonMetrics() {
  const registry = createRegistry('damselfly_dfdaemon');
  const registers = [registry];
  return {
    registry,
    downloadBytes: new Counter({
      name: 'damselfly_dfdaemon_download_bytes_total',
      help: 'Verified piece bytes downloaded, by source type',
      labelNames: ['source'], // peer | supernode | back_to_source
      registers,
    }),
    uploadBytes: new Counter({ name: 'damselfly_dfdaemon_upload_bytes_total', help: 'Piece bytes uploaded to other peers', registers }),
    pieceFailures: new Counter({ name: 'damselfly_dfdaemon_piece_failures_total', help: 'Piece downloads that failed', labelNames: ['reason'], registers }),
    backSource: new Counter({ name: 'damselfly_dfdaemon_back_source_total', help: 'Tasks (or their rest) fetched from the origin directly', labelNames: ['why'], registers }),
    tasks: new Counter({ name: 'damselfly_dfdaemon_tasks_total', help: 'Downloads by outcome', labelNames: ['result'], registers }),
    proxyRequests: new Counter({ name: 'damselfly_dfdaemon_proxy_requests_total', help: 'Proxy requests', labelNames: ['kind', 'status'], registers }),
    cacheBytes: new Gauge({ name: 'damselfly_dfdaemon_cache_bytes', help: 'Bytes of verified pieces in the cache', registers }),
    cacheTasks: new Gauge({ name: 'damselfly_dfdaemon_cache_tasks', help: 'Tasks in the cache', registers }),
    evictions: new Counter({ name: 'damselfly_dfdaemon_evictions_total', help: 'Tasks evicted by GC', labelNames: ['why'], registers }),
    uploadsActive: new Gauge({ name: 'damselfly_dfdaemon_uploads_active', help: 'Pieces being uploaded now', registers }),
  };
}

export type DaemonMetrics = ReturnType<typeof createDaemonMetrics>;
