import type { Schema } from '@damselfly/shared';
import type { ConductorOptions } from './conductor.js';

/**
 * The peer engine's settings, one schema for every host of the engine: the dfdaemon folds it into its config (file,
 * environment, flags), and dfget standalone takes its defaults, so a one-shot peer routes around slow sources and
 * refuses absurd sizes exactly as a node does.
 */
export const engineSchema: Schema = {
  parallelPieces: { type: 'int', default: 8, min: 1, max: 64, env: 'DFDAEMON_PARALLEL_PIECES', doc: 'pieces in flight per task to start with; adapted to what the download measures, from half to four times this (at most 64)' },
  pieceTimeoutMs: {
    type: 'int',
    default: 30_000,
    min: 100,
    max: 55_000,
    env: 'DFDAEMON_PIECE_TIMEOUT_MS',
    doc: 'time limit for one piece; under the supernode\'s 60 s assignment timeout, past which a transfer still running counts as never reported (its peer then books one piece at a time)',
  },
  pieceMinRate: { type: 'size', default: 256 * 1024, min: 0, env: 'DFDAEMON_PIECE_MIN_RATE', doc: 'slowest acceptable piece source per second, e.g. 256KiB (0 = any)' },
  backSource: { type: 'bool', default: true, env: 'DFDAEMON_BACK_SOURCE', doc: 'fetch from the origin when no supernode answers' },
  downloadRate: { type: 'size', default: 0, min: 0, env: 'DFDAEMON_DOWNLOAD_RATE', doc: 'most bytes per second this node downloads, all sources, e.g. 100MiB (0 = no limit)' },
  backSourceRate: { type: 'size', default: 0, min: 0, env: 'DFDAEMON_BACK_SOURCE_RATE', doc: 'most bytes per second this node fetches from origins itself (0 = no limit)' },
};

/** The engine's settings from a validated config (or the defaults); `maxBlobSize` comes from the trust settings. */
export function engineOptions(v: Partial<Record<keyof ConductorOptions, unknown>> = {}, maxBlobSize?: number): ConductorOptions {
  const pick = (k: keyof typeof engineSchema & keyof ConductorOptions) => v[k] ?? engineSchema[k]!.default;
  return {
    parallelPieces: Number(pick('parallelPieces')),
    pieceTimeoutMs: Number(pick('pieceTimeoutMs')),
    pieceMinRate: Number(pick('pieceMinRate')),
    backSource: Boolean(pick('backSource')),
    downloadRate: Number(pick('downloadRate')),
    backSourceRate: Number(pick('backSourceRate')),
    ...(maxBlobSize !== undefined ? { maxBlobSize } : {}),
  };
}
