/**
 * A fixed set of reusable buffers for serving data from disk: each chunk is read into a pooled buffer, written to the
 * socket, and the buffer goes back once the socket has taken it. Memory for serving is the pool's size however many
 * readers there are (one that stops reading holds at most one buffer, and only until it is cut), and no chunk leaves
 * garbage behind for the collector.
 */
export class BufferPool {
  readonly size: number;
  readonly #free: Buffer[] = [];
  readonly #waiters: ((b: Buffer) => void)[] = [];
  #created = 0;
  readonly #max: number;

  constructor(size = 1 << 20, max = 32) {
    this.size = size;
    this.#max = max;
  }

  /** Buffers allocated so far (never more than `max` through `acquire`). */
  get allocated(): number {
    return this.#created;
  }

  async acquire(signal?: AbortSignal): Promise<Buffer> {
    const b = this.#free.pop();
    if (b) return b;
    if (this.#created < this.#max) {
      this.#created++;
      return Buffer.allocUnsafeSlow(this.size);
    }
    signal?.throwIfAborted();
    return new Promise<Buffer>((resolve, reject) => {
      const onAbort = () => {
        const i = this.#waiters.indexOf(give);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal!.reason);
      };
      const give = (buf: Buffer) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(buf);
      };
      this.#waiters.push(give);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * A buffer now, never waiting: a free one, or a new one when none is free (for callers whose own limits bound how
   * many they hold). Beyond `max`, the extra buffers are dropped when they come back rather than kept.
   */
  take(): Buffer {
    const b = this.#free.pop();
    if (b) return b;
    this.#created++;
    return Buffer.allocUnsafeSlow(this.size);
  }

  release(b: Buffer): void {
    const next = this.#waiters.shift();
    if (next) next(b);
    else if (this.#free.length < this.#max) this.#free.push(b);
    else this.#created--;
  }
}
