/**
 * Push, not poll: what every peer still needs in each task and how many pieces it can have in flight there, kept by
 * the supernode so that it assigns sources the moment they become possible and pushes them, instead of peers asking
 * again on a timer. A peer states its wants once (`pieces:want`), again only when they grow or its capacity
 * changes; the supernode strikes a piece off when it assigns it and puts it back when its transfer fails.
 *
 * When anything changes in a task (a slot frees, a peer gets a piece, the supernode records one, a tuned slot count
 * grows), the task is marked; `flush` then offers the new sources to the task's peers that have room and wants,
 * round-robin (whoever got something goes to the back), and stops after a few peers in a row got nothing, so one
 * change costs bounded work in a swarm of thousands. Shared with the simulator: it is plain state over the
 * `Scheduler` and its policy, with no I/O and no timers of its own.
 */
import type { Scheduler } from './scheduler.js';
import type { Choice } from './policy.js';

/** Hands choices made for a peer to it (the supernode pushes them over its socket; the simulator starts flows). */
export type Deliver = (taskId: string, choices: Choice[]) => void;

interface Demand {
  /** Wanted and not assigned, in the peer's order of preference. */
  want: Set<number>;
  max: number;
}

interface TaskDemands {
  all: Map<string, Demand>;
  /** Peers with room and wants, in the order they get offered sources (insertion order, rotated). */
  ready: Set<string>;
}

export interface DemandsOptions {
  /** Peers in a row that may get nothing from one change before the rest wait for the next (default 4). */
  misses?: number;
  /** Called when a task is marked and no flush is due yet (the supernode defers one; the simulator flushes itself). */
  onMarked?: () => void;
}

export class Demands {
  readonly #sched: Scheduler;
  readonly #tasks = new Map<string, TaskDemands>();
  readonly #deliver = new Map<string, Deliver>();
  readonly #dirty = new Set<string>();
  readonly #misses: number;
  readonly #onMarked: () => void;

  constructor(sched: Scheduler, opts: DemandsOptions = {}) {
    this.#sched = sched;
    this.#misses = opts.misses ?? 4;
    this.#onMarked = opts.onMarked ?? (() => {});
    sched.on('sources:changed', (taskId) => this.#mark(taskId));
    sched.on('assignment:ended', (taskId, peerId) => {
      const t = this.#tasks.get(taskId);
      const d = t?.all.get(peerId);
      if (!t || !d || !this.#fits(taskId, peerId, d)) return;
      t.ready.add(peerId);
      this.#mark(taskId);
    });
  }

  /** A peer's session: where its pushes go. */
  connect(peerId: string, deliver: Deliver): void {
    this.#deliver.set(peerId, deliver);
  }

  /** The session ended: nothing more is assigned to it anywhere. */
  disconnect(peerId: string): void {
    this.#deliver.delete(peerId);
    for (const [taskId, t] of this.#tasks) this.#drop(taskId, t, peerId);
  }

  /**
   * Replaces what `peerId` wants in `taskId` and how many pieces it may have in flight there; returns what can be
   * assigned to it right away (already booked; the caller hands them over). Later ones are delivered by `flush`.
   */
  want(taskId: string, peerId: string, want: readonly number[], max: number, now = Date.now()): Choice[] {
    let t = this.#tasks.get(taskId);
    if (!want.length) {
      if (t) this.#drop(taskId, t, peerId);
      return [];
    }
    if (!t) this.#tasks.set(taskId, (t = { all: new Map(), ready: new Set() }));
    const d: Demand = { want: new Set(want), max };
    t.all.set(peerId, d);
    t.ready.delete(peerId);
    const got = this.#assign(taskId, peerId, d, now);
    if (this.#fits(taskId, peerId, d)) t.ready.add(peerId);
    return got;
  }

  /** A transfer of `piece` to `peerId` failed (not by its own cancelling): the piece is wanted again. */
  failed(taskId: string, peerId: string, piece: number): void {
    const t = this.#tasks.get(taskId);
    const d = t?.all.get(peerId);
    if (!t || !d) return;
    d.want.add(piece);
    if (this.#fits(taskId, peerId, d)) t.ready.add(peerId);
    this.#mark(taskId);
  }

  /** `peerId` got `piece` (from whichever of its transfers finished first): it is not wanted any more. */
  got(taskId: string, peerId: string, piece: number): void {
    this.#tasks.get(taskId)?.all.get(peerId)?.want.delete(piece);
  }

  /** The peer left the task. */
  leave(taskId: string, peerId: string): void {
    const t = this.#tasks.get(taskId);
    if (t) this.#drop(taskId, t, peerId);
  }

  /**
   * Forgets every demand in a task that is gone (its bytes were not its digest's, GC evicted it): a flush must not
   * schedule in it again, which would bring an empty swarm for it back into the scheduler for good.
   */
  forget(taskId: string): void {
    this.#tasks.delete(taskId);
    this.#dirty.delete(taskId);
  }

  /** Marks every task with waiting peers (a safety net run now and then: a change nobody reported is not lost). */
  markAll(): void {
    for (const [taskId, t] of this.#tasks) if (t.ready.size) this.#mark(taskId);
  }

  /** Offers what changed in marked tasks to their waiting peers; delivers what they get. */
  flush(now = Date.now()): void {
    // A delivery can mark tasks again (a flush never recurses into itself: they wait for the next one).
    const tasks = [...this.#dirty];
    this.#dirty.clear();
    for (const taskId of tasks) {
      const t = this.#tasks.get(taskId);
      if (t) this.#flushTask(taskId, t, now);
    }
  }

  /** Peers waiting in a task with room for more (for tests and metrics). */
  waiting(taskId: string): number {
    return this.#tasks.get(taskId)?.ready.size ?? 0;
  }

  /** (task, peer) demands held. */
  get size(): number {
    let n = 0;
    for (const t of this.#tasks.values()) n += t.all.size;
    return n;
  }

  #flushTask(taskId: string, t: TaskDemands, now: number): void {
    let misses = 0;
    // Each ready peer is offered at most once per flush, and moves behind the rest after its turn (those re-added
    // come round again in this loop only past the count it started with).
    const n = t.ready.size;
    let turns = 0;
    for (const peerId of t.ready) {
      if (turns++ >= n || misses >= this.#misses) break;
      const d = t.all.get(peerId);
      if (!d || !this.#fits(taskId, peerId, d)) {
        t.ready.delete(peerId);
        continue;
      }
      const got = this.#assign(taskId, peerId, d, now);
      t.ready.delete(peerId);
      if (!got.length) misses++;
      else {
        misses = 0;
        this.#deliver.get(peerId)?.(taskId, got);
      }
      if (this.#fits(taskId, peerId, d)) t.ready.add(peerId);
    }
  }

  #assign(taskId: string, peerId: string, d: Demand, now: number): Choice[] {
    const room = d.max - this.#sched.inflightOf(taskId, peerId);
    if (room <= 0 || !d.want.size) return [];
    // Everyone with a demand here is downloading (a peer that stops says so with an empty want).
    const got = this.#sched.schedule(taskId, peerId, [...d.want], room, now, this.#tasks.get(taskId)?.all.size);
    for (const c of got) d.want.delete(c.piece);
    return got;
  }

  #fits(taskId: string, peerId: string, d: Demand): boolean {
    return d.want.size > 0 && this.#sched.inflightOf(taskId, peerId) < d.max;
  }

  #drop(taskId: string, t: TaskDemands, peerId: string): void {
    t.all.delete(peerId);
    t.ready.delete(peerId);
    if (!t.all.size) this.#tasks.delete(taskId);
  }

  #mark(taskId: string): void {
    if (!this.#tasks.get(taskId)?.ready.size || this.#dirty.has(taskId)) return;
    const first = this.#dirty.size === 0;
    this.#dirty.add(taskId);
    if (first) this.#onMarked();
  }
}
