/**
 * Bytes per second over the last couple of seconds, in fixed buckets (no per-chunk allocation): what a source
 * actually delivered to this node across all its transfers, or what the supernode's uplink actually carried.
 */
const BUCKET_MS = 250;
const BUCKETS = 8;
/** The window the rate is taken over. */
export const RATE_WINDOW_MS = BUCKET_MS * BUCKETS;

export class RateMeter {
  readonly #ids = new Float64Array(BUCKETS).fill(-1);
  readonly #sums = new Float64Array(BUCKETS);
  #last = -Infinity;

  add(n: number, now = performance.now()): void {
    const b = Math.floor(now / BUCKET_MS);
    const i = b % BUCKETS;
    if (this.#ids[i] !== b) {
      this.#ids[i] = b;
      this.#sums[i] = 0;
    }
    this.#sums[i]! += n;
    this.#last = now;
  }

  /** Bytes per second over the last window (the current bucket included). */
  rate(now = performance.now()): number {
    const b = Math.floor(now / BUCKET_MS);
    let sum = 0;
    for (let i = 0; i < BUCKETS; i++) if (this.#ids[i]! > b - BUCKETS && this.#ids[i]! <= b) sum += this.#sums[i]!;
    return sum / (RATE_WINDOW_MS / 1000);
  }

  /** Nothing added within the window. */
  idle(now = performance.now()): boolean {
    return now - this.#last > RATE_WINDOW_MS;
  }
}

/** One meter per key (a source), forgotten once idle so the map does not grow with every source ever seen. */
export class RateMeters {
  readonly #m = new Map<string, RateMeter>();

  add(key: string, n: number, now = performance.now()): void {
    let m = this.#m.get(key);
    if (!m) {
      if (this.#m.size >= 256) for (const [k, v] of this.#m) if (v.idle(now)) this.#m.delete(k);
      this.#m.set(key, (m = new RateMeter()));
    }
    m.add(n, now);
  }

  rate(key: string, now = performance.now()): number {
    return this.#m.get(key)?.rate(now) ?? 0;
  }
}
