/**
 * Every path this run created on disk besides the output (the temporary file beside -O, the one-shot peer's cache
 * directory). A failed or interrupted run removes them all itself before exiting, rather than relying on the code that
 * created them getting to its `finally`: on a timeout or a signal that code may still be stuck in a library. While
 * the run lives it touches them every `heartbeatMs`, so a later run does not take them for a killed run's leftovers
 * (see leftovers.ts).
 */
import { rm, utimes } from 'node:fs/promises';
import { HEARTBEAT_MS } from './leftovers.js';

export class Scratch {
  readonly #paths = new Set<string>();
  readonly #creating = new Set<Promise<unknown>>();
  #closed = false;
  readonly #heartbeat: NodeJS.Timeout;

  constructor({ heartbeatMs = HEARTBEAT_MS }: { heartbeatMs?: number } = {}) {
    this.#heartbeat = setInterval(() => void this.#touch(), heartbeatMs).unref();
  }

  async #touch(): Promise<void> {
    const now = new Date();
    // A path not made yet, or already gone, has nothing to keep alive.
    await Promise.allSettled([...this.#paths].filter((p) => !this.#untouched.has(p)).map((p) => utimes(p, now, now)));
  }

  /** Paths removed with the rest but never touched (a file shared with the dfdaemon: a change makes it drop its copy). */
  readonly #untouched = new Set<string>();

  /** `path` stays registered for removal, but is not touched from now on (see leftovers.ts for how its age is told). */
  untouched(path: string): void {
    this.#untouched.add(path);
  }

  /** The run is over: nothing is touched any more. */
  dispose(): void {
    clearInterval(this.#heartbeat);
  }

  /** `path` is about to be created (register it first: a removal may come before the creation finishes). */
  add(path: string): void {
    this.#paths.add(path);
  }

  /**
   * Starts the creation of a registered path, so that removeAll() waits for it rather than racing it; once the run
   * has ended nothing is created (a function, not a promise: a creation already started could not be stopped).
   */
  during<T>(create: () => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new Error('the run has ended'));
    const creation = create();
    this.#creating.add(creation);
    const done = () => this.#creating.delete(creation);
    creation.then(done, done);
    return creation;
  }

  /** `path` is gone or is now the user's (a renamed output): never remove it. */
  forget(path: string): void {
    this.#paths.delete(path);
  }

  /** Removes `path` now (it is no longer needed on any path). */
  async release(path: string): Promise<void> {
    this.#paths.delete(path);
    await rm(path, { recursive: true, force: true, maxRetries: 3 });
  }

  /** Removes everything; no creation starts afterwards. Safe to call again (for what a late writer recreated). */
  async removeAll(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#creating]);
    await Promise.allSettled([...this.#paths].map((p) => rm(p, { recursive: true, force: true, maxRetries: 3 })));
  }
}
