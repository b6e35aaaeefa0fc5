/**
 * Endgame: when every piece a download still needs is in flight, a piece coming slowly holds up the whole download
 * while this node has room for more. Such pieces get a second source (the supernode picks one other than the first);
 * whichever transfer finishes first wins and the other is cancelled. A pure rule, shared with the simulator.
 *
 * "Slowly" is measured against this download's own pieces: in flight for more than `SLOW_FACTOR` times the median
 * time its finished pieces took (and at least `MIN_MS`), so a link that is slow for everyone does not double its
 * traffic, and a piece stuck behind a congested or stalled source does not set the finish time.
 */
export interface InFlightPiece {
  piece: number;
  /** When its (first) transfer started, ms. */
  startedAt: number;
  /** Whether it already has, or was already refused, a second source. */
  asked: boolean;
}

export interface EndgameInput {
  /** Pieces still needed and not in flight: while there are any, it is not the endgame. */
  unrequested: number;
  inflight: readonly InFlightPiece[];
  /** Transfers this node can still start (its in-flight limit minus what is in flight). */
  room: number;
  /** How long this download's finished pieces took, ms (any order). */
  durations: readonly number[];
  now: number;
}

export const ENDGAME_SLOW_FACTOR = 1.5;
export const ENDGAME_MIN_MS = 1_000;

/** The time from which a piece in flight counts as slow (Infinity before any piece finished). */
export function slowAfterMs(durations: readonly number[]): number {
  if (!durations.length) return Infinity;
  const sorted = [...durations].sort((a, b) => a - b);
  return Math.max(ENDGAME_MIN_MS, ENDGAME_SLOW_FACTOR * sorted[Math.floor(sorted.length / 2)]!);
}

/** Pieces to ask a second source for now, oldest first; and when the next one would turn slow (ms, or Infinity). */
export function endgamePieces(i: EndgameInput): { pieces: number[]; nextAt: number } {
  if (i.unrequested > 0 || i.room <= 0 || !i.inflight.length) return { pieces: [], nextAt: Infinity };
  const slow = slowAfterMs(i.durations);
  const open = i.inflight.filter((f) => !f.asked).sort((a, b) => a.startedAt - b.startedAt);
  const pieces: number[] = [];
  let nextAt = Infinity;
  for (const f of open) {
    // The same sum both ways: a piece due at `nextAt` is slow when `now` reaches it (no rounding gap to loop in).
    if (f.startedAt + slow <= i.now) {
      if (pieces.length < i.room) pieces.push(f.piece);
    } else nextAt = Math.min(nextAt, f.startedAt + slow);
  }
  return { pieces, nextAt };
}
