/**
 * How many pieces a download keeps in flight: adapted to what it measures instead of a fixed `parallelPieces`. Each
 * transfer comes from a different source with its own uplink, so more of them move more bytes until this node's
 * downlink (or the swarm) is the limit; past that point they only split the same bytes into slower streams, hold
 * more sources' slots and delay the pieces others could relay. Nobody knows the downlink's capacity, so the limit
 * probes for it, like TCP: when every allowed transfer was busy through a measuring window, it tries one more; if
 * the next window's rate did not grow by `GAIN`, it steps back and holds for `HOLD` windows. A pure rule, shared
 * with the simulator.
 */
export interface InflightState {
  limit: number;
  /** Bytes/s measured over the window before the last change. */
  before: number;
  /** The last change was a step up whose effect is being measured. */
  probing: boolean;
  /** Windows left before the next step up. */
  hold: number;
}

export interface InflightWindow {
  /** Bytes/s this download received over the window. */
  rate: number;
  /** Whether every allowed transfer was under way through the window (the limit, not the sources, held it back). */
  saturated: boolean;
}

export interface InflightBounds {
  min: number;
  max: number;
}

/** The window the rule measures over, ms. */
export const INFLIGHT_WINDOW_MS = 2_000;
/** A step up must raise the rate by this much to stay. */
export const INFLIGHT_GAIN = 1.1;
/** Windows to wait after a step up that did not pay. */
export const INFLIGHT_HOLD = 3;

/** The bounds for a configured `parallelPieces`: from half of it to four times it (at most 64). */
export function inflightBounds(parallelPieces: number): InflightBounds {
  return { min: Math.max(1, Math.ceil(parallelPieces / 2)), max: Math.max(parallelPieces, Math.min(64, 4 * parallelPieces)) };
}

export function startInflight(parallelPieces: number): InflightState {
  return { limit: parallelPieces, before: 0, probing: false, hold: 0 };
}

export function tuneInflight(s: InflightState, w: InflightWindow, b: InflightBounds): InflightState {
  if (s.probing) {
    // The step up is judged by what it did: kept if the rate grew, undone (and not tried again for a while) if not.
    if (w.rate >= s.before * INFLIGHT_GAIN) return { limit: s.limit, before: w.rate, probing: false, hold: 0 };
    return { limit: Math.max(b.min, s.limit - 1), before: w.rate, probing: false, hold: INFLIGHT_HOLD };
  }
  if (s.hold > 0) return { ...s, before: w.rate, hold: s.hold - 1 };
  // Sources were the limit (not every allowed transfer was under way): more allowed would change nothing.
  if (!w.saturated || s.limit >= b.max) return { ...s, before: w.rate };
  return { limit: s.limit + 1, before: w.rate, probing: true, hold: 0 };
}

/** How long, within a window, every allowed transfer was under way: fed each time the count or the limit changes. */
export class SaturationClock {
  #since: number | undefined;
  #ms = 0;

  /** The transfers under way reach (`full`) or fall below the limit at `now`. */
  update(now: number, full: boolean): void {
    if (full) this.#since ??= now;
    else if (this.#since !== undefined) {
      this.#ms += now - this.#since;
      this.#since = undefined;
    }
  }

  /** Whether the limit was reached for at least `share` of the window ending at `now`; starts the next window. */
  take(now: number, windowMs: number, share = 0.8): boolean {
    if (this.#since !== undefined) {
      this.#ms += now - this.#since;
      this.#since = now;
    }
    const saturated = this.#ms >= share * windowMs;
    this.#ms = 0;
    return saturated;
  }
}
