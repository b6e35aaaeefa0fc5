/**
 * How many pieces the supernode serves at once: as few streams as keep its uplink full (super-seeding), not a fixed
 * number. Each stream should get at least `streamRate`, so first copies reach peers fast and peers can relay them
 * on; a fixed 64 slots on a 50 Mbit/s uplink gives every stream under 100 KB/s and no piece lands for half a minute.
 *
 * A pure function of what was measured, shared with the simulator: like TCP's slow start, the count doubles while
 * every slot is busy and each stream still gets twice its target, grows by one while they get the target, and falls
 * back to what the measured rate can carry when streams get under half of it. It grows at most once per measuring
 * window, and falls at once.
 */
export interface SlotTuning {
  /** Never fewer (also the starting point). */
  min: number;
  /** Never more (`uploadSlots`). */
  max: number;
  /** Bytes/s each stream should get; 0 = fixed at `max`. */
  streamRate: number;
}

export interface SlotSample {
  /** The current limit. */
  slots: number;
  /** Pieces being served now. */
  active: number;
  /** Bytes/s the supernode served over the last couple of seconds. */
  rate: number;
  /**
   * Time since the count last grew. It grows at most once per rate window: the effect of more streams shows in the
   * measured rate only a window later, and growing on stale evidence overshoots (socket buffers first fill at memory
   * speed). Absent: no such limit.
   */
  sinceIncreaseMs?: number;
}

/** The window the supernode measures its uplink over (RateMeter): the count grows at most once per window. */
export const SLOT_GROWTH_MS = 2_000;

export function tuneSlots(s: SlotSample, t: SlotTuning): number {
  if (t.streamRate <= 0) return t.max;
  const clamp = (n: number) => Math.max(t.min, Math.min(t.max, n));
  if (s.active === 0) return clamp(s.slots);
  const perStream = s.rate / s.active;
  if (perStream < t.streamRate / 2) return clamp(Math.min(s.slots - 1, Math.ceil(s.rate / t.streamRate)));
  if ((s.sinceIncreaseMs ?? Infinity) < SLOT_GROWTH_MS) return clamp(s.slots);
  if (s.active >= s.slots && perStream >= 2 * t.streamRate) return clamp(s.slots * 2);
  if (s.active >= s.slots && perStream >= t.streamRate) return clamp(s.slots + 1);
  return clamp(s.slots);
}

/** The fewest streams the supernode serves at once (also where tuning starts). */
const MIN_SLOTS = 4;

/**
 * The tuning loop's state, one per supernode (and per simulated one): the count for streams that send, and when it
 * last grew, since it grows at most once per measuring window.
 */
export class SlotTuner {
  readonly tuning: SlotTuning;
  #slots: number;
  #grewAt = -Infinity;

  /** Between MIN_SLOTS (or `max` if lower) and `max`, aiming at `streamRate` per stream; `streamRate` 0: fixed at `max`. */
  constructor(max: number, streamRate: number) {
    this.tuning = { min: Math.min(MIN_SLOTS, max), max, streamRate };
    this.#slots = streamRate > 0 ? this.tuning.min : max;
  }

  get slots(): number {
    return this.#slots;
  }

  /** One tick: `active` streams sending, `rate` bytes/s sent over the last window, at `now` (ms). */
  next(active: number, rate: number, now: number): number {
    const n = tuneSlots({ slots: this.#slots, active, rate, sinceIncreaseMs: now - this.#grewAt }, this.tuning);
    if (n > this.#slots) this.#grewAt = now;
    return (this.#slots = n);
  }
}

/**
 * Upload slots for a peer with an upload limit: as many streams as the limit carries at `streamRate` each (at least
 * one, at most the usual `max`), so a capped peer is not handed more uploads than it can serve at a useful rate.
 */
export function slotsForRate(uploadRate: number, streamRate: number, max: number): number {
  if (uploadRate <= 0 || streamRate <= 0) return max;
  return Math.max(1, Math.min(max, Math.floor(uploadRate / streamRate)));
}
