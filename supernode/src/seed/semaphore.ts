/** Counting semaphore bounding concurrent origin requests. */
export class Semaphore {
  #free: number;
  readonly #waiters: (() => void)[] = [];
  constructor(n: number) {
    this.#free = n;
  }
  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.#free > 0) {
      this.#free--;
      return this.#releaser();
    }
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        const i = this.#waiters.indexOf(wake);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal!.reason);
      };
      const wake = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      this.#waiters.push(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    return this.#releaser();
  }
  /** A release function that only counts once, however often it is called. */
  #releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#release();
    };
  }
  #release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#free++;
  }
}
