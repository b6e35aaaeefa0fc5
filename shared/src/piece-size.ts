const MiB = 1024 * 1024;
export const MIN_PIECE_SIZE = 1 * MiB;
export const MAX_PIECE_SIZE = 64 * MiB;
/** How many pieces a blob is cut into, until pieces reach one of the bounds. */
export const TARGET_PIECE_COUNT = 100;

/**
 * Piece size for a blob of `length` bytes: whole MiB, about TARGET_PIECE_COUNT pieces, between 1 and 64 MiB.
 *
 * Why about 100 pieces: a piece is the unit the scheduler hands out, so the count is what lets a swarm spread at once —
 * with Dragonfly's 4 MiB floor a 200 MB blob is 48 pieces, and in the simulated Dragonfly scenario (200 and 1000
 * peers) first copies then reach the swarm too few at a time to end within 1.2x of the bound; with ~100 they do (the
 * README's simulator section has the numbers). Smaller pieces cost little on the data path (verification and
 * relaying are per 256 KiB block) but each costs scheduling messages, so the count stays near 100 rather than
 * growing with the blob. The 64 MiB cap keeps a huge blob's piece count bounded as well, and the 1 MiB floor keeps
 * small blobs from being cut into single blocks.
 * `min` (whole MiB, at most MAX_PIECE_SIZE) raises the floor: the supernode's `minPieceSize`.
 */
export function pieceSizeFor(length: number, min: number = MIN_PIECE_SIZE): number {
  const size = Math.ceil(length / TARGET_PIECE_COUNT / MiB) * MiB;
  return Math.min(MAX_PIECE_SIZE, Math.max(min, size));
}

export function pieceCountFor(length: number, pieceSize: number): number {
  return length === 0 ? 0 : Math.ceil(length / pieceSize);
}

/** Inclusive byte range [start, end] of piece `n`. */
export function pieceRange(n: number, pieceSize: number, length: number): { start: number; end: number } {
  const start = n * pieceSize;
  return { start, end: Math.min(length, start + pieceSize) - 1 };
}
