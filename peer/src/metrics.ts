import { Counter, type Registry } from 'prom-client';

/** The peer engine's counters, registered in its host's registry (the dfdaemon's, or a throwaway one in dfget). */
export function createPeerMetrics(registry: Registry) {
  const registers = [registry];
  return {
    downloadBytes: new Counter({
      name: 'damselfly_dfdaemon_download_bytes_total',
      help: 'Verified piece bytes downloaded, by source type',
      labelNames: ['source'], // peer | supernode | back_to_source
      registers,
    }),
    pieceFailures: new Counter({ name: 'damselfly_dfdaemon_piece_failures_total', help: 'Piece downloads that failed', labelNames: ['reason'], registers }),
    backSource: new Counter({ name: 'damselfly_dfdaemon_back_source_total', help: 'Tasks (or their rest) fetched from the origin directly', labelNames: ['why'], registers }),
    tasks: new Counter({ name: 'damselfly_dfdaemon_tasks_total', help: 'Downloads by outcome', labelNames: ['result'], registers }),
    digestBytes: new Counter({
      name: 'damselfly_dfdaemon_digest_bytes_total',
      help: 'Bytes fed to local whole-blob digest checks: inline (from blocks as they landed) or read back from disk',
      labelNames: ['how'],
      registers,
    }),
    endgameWins: new Counter({
      name: 'damselfly_dfdaemon_endgame_wins_total',
      help: 'Pieces whose endgame second source finished before the slow first one',
      registers,
    }),
    wholeChecks: new Counter({ name: 'damselfly_dfdaemon_whole_blob_checks_total', help: 'Whole-blob digest checks, by who did them', labelNames: ['by'], registers }),
  };
}

export type PeerMetrics = ReturnType<typeof createPeerMetrics>;
