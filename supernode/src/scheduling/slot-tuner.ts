/**
 * How many pieces the supernode serves at once: as few streams as keep its uplink full (super-seeding), not a fixed
 * number. How fast each stream goes matters twice: a first copy lands sooner, and every peer relaying it (and relaying
 * the relays) goes at that stream's pace, so 64 streams of 5 MB/s on a 300 MB/s uplink hold the whole swarm's slots in
 * trees moving at 5 MB/s, while peers' own transfers run at 37 MB/s.
 *
 * So a stream should get what a transfer between peers typically gets (`flowRate`, learned from reports), and never
 * less than `streamRate`. A pure function of what was measured, shared with the simulator: like TCP's slow start, the
 * count doubles while every slot is busy and each stream still gets twice that target, grows by one while they get
 * the target, and falls back to what the measured rate carries when streams get under half of it. Between half and
 * all of the target it stays: streams held there by their receivers (a peer shares its downlink among its
 * transfers) are no reason to shrink. It grows at most once per measuring window, and falls at once.
 */
export interface SlotTuning {
  /** Never fewer (also the starting point). */
  min: number;
  /** Never more (`uploadSlots`). */
  max: number;
  /** Bytes/s each stream should get at least; 0 = fixed at `max`. */
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
   * Bytes/s a transfer between peers typically gets in this swarm (undefined while none has been reported): the
   * target per stream when it is above `streamRate`.
   */
  flowRate?: number;
  /**
   * Time since the count last grew. It grows at most once per rate window: the effect of more streams shows in the
   * measured rate only a window later, and growing on stale evidence overshoots (socket buffers first fill at memory
   * speed). Absent: no such limit.
   */
  sinceIncreaseMs?: number;
}

/** The window the supernode measures its uplink over (RateMeter): the count grows at most once per window. */
export const SLOT_GROWTH_MS = 2_000;

/** The share of a typical peer transfer's rate a supernode stream aims at (peers' rates are noisy). */
const FLOW_SHARE = 0.75;

export function tuneSlots(s: SlotSample, t: SlotTuning): number {
  if (t.streamRate <= 0) return t.max;
  const clamp = (n: number) => Math.max(t.min, Math.min(t.max, n));
  if (s.active === 0) return clamp(s.slots);
  const target = Math.max(t.streamRate, FLOW_SHARE * (s.flowRate ?? 0));
  const perStream = s.rate / s.active;
  if (perStream < target / 2) return clamp(Math.min(s.slots - 1, Math.ceil(s.rate / target)));
  if ((s.sinceIncreaseMs ?? Infinity) < SLOT_GROWTH_MS) return clamp(s.slots);
  if (s.active >= s.slots && perStream >= 2 * target) return clamp(s.slots * 2);
  if (s.active >= s.slots && perStream >= target) return clamp(s.slots + 1);
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

  /** One tick: `active` streams sending, `rate` bytes/s sent over the last window, at `now` (ms); `flowRate` as in SlotSample. */
  next(active: number, rate: number, now: number, flowRate?: number): number {
    const n = tuneSlots({ slots: this.#slots, active, rate, flowRate, sinceIncreaseMs: now - this.#grewAt }, this.tuning);
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
