/**
 * When a daemon's cache GC runs: on its timer, and at once under pressure (a write found the disk full). Calls while
 * a pass runs share it rather than run another beside it; a pressure pass waits for a timed one to finish (whose
 * removals may already make the room), and writes failing together share one pressure pass.
 */
export class GcRunner<R> {
  readonly #pass: (now: number, pressure: boolean) => Promise<R>;
  #running?: Promise<R>;
  #relieving?: Promise<R>;

  constructor(pass: (now: number, pressure: boolean) => Promise<R>) {
    this.#pass = pass;
  }

  /** A timed pass (or the one under way). */
  run(now = Date.now()): Promise<R> {
    if (this.#relieving) return this.#relieving;
    this.#running ??= this.#pass(now, false).finally(() => (this.#running = undefined));
    return this.#running;
  }

  /** A pass under pressure (or the one under way). */
  relieve(): Promise<R> {
    this.#relieving ??= (async () => {
      await this.#running?.catch(() => {});
      return this.#pass(Date.now(), true);
    })().finally(() => (this.#relieving = undefined));
    return this.#relieving;
  }

  /** Resolves once no pass is under way (for a stop). */
  async settled(): Promise<void> {
    await Promise.allSettled([this.#running, this.#relieving]);
  }
}
