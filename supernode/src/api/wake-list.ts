/**
 * Peers waiting for sources: a peer whose `pieces:schedule` got nothing is remembered per task, and told
 * (`pieces:available`) when something changes there (a slot frees, a peer gets a piece, the supernode records one),
 * instead of polling. A few at a time, in the order they started waiting, so one freed slot does not send the whole
 * swarm back at once; the others ask again on their own after the retry hint.
 */
export type Notify = (taskId: string) => void;

export class WakeList {
  readonly #waiting = new Map<string, Set<Notify>>();
  readonly #perChange: number;

  constructor(perChange = 8) {
    this.#perChange = perChange;
  }

  wait(taskId: string, notify: Notify): void {
    let set = this.#waiting.get(taskId);
    if (!set) this.#waiting.set(taskId, (set = new Set()));
    set.add(notify);
  }

  /** Tells up to `perChange` of the task's waiters, longest waiting first; they stop waiting. */
  wake(taskId: string): void {
    const set = this.#waiting.get(taskId);
    if (!set) return;
    let n = 0;
    for (const notify of set) {
      if (n++ >= this.#perChange) break;
      set.delete(notify);
      notify(taskId);
    }
    if (set.size === 0) this.#waiting.delete(taskId);
  }

  /** A session ended: it waits for nothing any more. */
  forget(notify: Notify): void {
    for (const [taskId, set] of this.#waiting) {
      set.delete(notify);
      if (set.size === 0) this.#waiting.delete(taskId);
    }
  }

  /** Waiting (task, peer) pairs now, for metrics and tests. */
  get size(): number {
    let n = 0;
    for (const set of this.#waiting.values()) n += set.size;
    return n;
  }
}
