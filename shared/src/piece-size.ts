const MiB = 1024 * 1024;
export const MIN_PIECE_SIZE = 4 * MiB;
export const MAX_PIECE_SIZE = 64 * MiB;

/**
 * Piece size for a blob of `length` bytes: 4 MiB up to 200 MiB, then 1 MiB more per 100 MiB
 * (as Dragonfly computes it), capped at 64 MiB, so a huge blob still has a bounded number of pieces.
 */
export function pieceSizeFor(length: number): number {
  if (length <= 200 * MiB) return MIN_PIECE_SIZE;
  const extra = Math.floor(length / (100 * MiB)) - 2;
  return Math.min(MAX_PIECE_SIZE, MIN_PIECE_SIZE + extra * MiB);
}

export function pieceCountFor(length: number, pieceSize: number): number {
  return length === 0 ? 0 : Math.ceil(length / pieceSize);
}

/** Inclusive byte range [start, end] of piece `n`. */
export function pieceRange(n: number, pieceSize: number, length: number): { start: number; end: number } {
  const start = n * pieceSize;
  return { start, end: Math.min(length, start + pieceSize) - 1 };
}
