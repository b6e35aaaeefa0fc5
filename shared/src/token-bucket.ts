/**
 * A bandwidth limit: bytes/s with a small burst, shared by every transfer it governs (all of a node's downloads, or
 * all its uploads). `take(n)` resolves when `n` bytes may pass; a caller that awaits it before each chunk slows its
 * stream, and TCP's flow control slows the other end. Bytes are let through on credit (the balance may go negative)
 * so a chunk larger than the burst still passes, just later: the long-run rate is exact.
 */
import { setTimeout as sleep } from 'node:timers/promises';

export class TokenBucket {
  /** Bytes per second; 0 = no limit. */
  readonly rate: number;
  readonly #burst: number;
  #tokens: number;
  #last = performance.now();
  /** Total time callers were held back, seconds (for metrics). */
  waitedSeconds = 0;

  constructor(rate: number, burstSeconds = 0.05) {
    this.rate = rate;
    // At least 64 KiB: smaller bursts than one socket read would pace every read.
    this.#burst = Math.max(64 * 1024, rate * burstSeconds);
    this.#tokens = this.#burst;
  }

  /** Resolves once `n` bytes may pass (at once without a limit); rejects if `signal` aborts while waiting. */
  take(n: number, signal?: AbortSignal): Promise<void> | undefined {
    if (this.rate <= 0) return undefined;
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.rate);
    this.#last = now;
    this.#tokens -= n;
    if (this.#tokens >= 0) return undefined;
    const waitMs = (-this.#tokens / this.rate) * 1000;
    this.waitedSeconds += waitMs / 1000;
    return sleep(waitMs, undefined, { signal });
  }
}

/**
 * The pace of a transfer under these limits (a back-to-source read counts against the download limit too), or
 * undefined when none is set: the caller then does not wait at all.
 */
export function paceAll(buckets: readonly (TokenBucket | undefined)[]): ((n: number, signal?: AbortSignal) => Promise<void> | undefined) | undefined {
  const live = buckets.filter((b): b is TokenBucket => b !== undefined && b.rate > 0);
  if (!live.length) return undefined;
  // One limit: its own answer, which is no promise at all while the burst lasts.
  if (live.length === 1) return (n, signal) => live[0]!.take(n, signal);
  return async (n, signal) => {
    for (const b of live) await b.take(n, signal);
  };
}
