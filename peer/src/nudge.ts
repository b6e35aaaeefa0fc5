/**
 * A wake-up for an event-driven loop: `poke()` makes the pending `next()` resolve, or the next one if the loop is busy
 * elsewhere (a poke is never lost, and many pokes while busy wake it once).
 */
export class Nudge {
  #poked = false;
  #resolve?: () => void;

  poke(): void {
    const resolve = this.#resolve;
    if (!resolve) {
      this.#poked = true;
      return;
    }
    this.#resolve = undefined;
    resolve();
  }

  /** Resolves at the next poke (at once if one came since the last call); rejects when `signal` aborts. */
  next(signal: AbortSignal): Promise<void> {
    if (this.#poked) {
      this.#poked = false;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const onAbort = () => {
        this.#resolve = undefined;
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#resolve = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
    });
  }
}
