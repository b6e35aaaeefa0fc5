/**
 * Cluster state for scheduling (who holds which piece, who uploads how much, who is blacklisted) and the one place
 * where it changes: every event goes through a method here. Decisions are delegated to a pure `SchedulePolicy`.
 */
import { EventEmitter } from 'node:events';
import { IndexedSet } from './indexed-set.js';
import { SUPERNODE, rarestFirst, type Choice, type SchedulePolicy, type SwarmView } from './policy.js';

export interface SchedulerOptions {
  supernodeSlots: number;
  peerSlots: number;
  failuresBeforeBlacklist: number;
  /** An assignment not reported back within this time frees its upload slot. */
  assignmentTimeoutMs?: number;
  policy?: SchedulePolicy;
}

interface PeerState {
  uploads: boolean;
  labels: Record<string, string> | undefined;
  tasks: Set<string>;
}

interface TaskSwarm {
  holders: Map<number, IndexedSet<string>>;
  inflight: Map<number, number>;
  blacklist: Set<string>;
  failures: Map<string, number>;
}

interface Pending {
  taskId: string;
  requester: string;
  piece: number;
  from: string;
  at: number;
}

const EMPTY: ReadonlySet<string> = new Set();

export interface SchedulerEvents {
  'peer:blacklisted': [{ taskId: string; peerId: string; reason: string }];
}

export class Scheduler extends EventEmitter<SchedulerEvents> {
  readonly #opts: Required<SchedulerOptions>;
  readonly #peers = new Map<string, PeerState>();
  readonly #tasks = new Map<string, TaskSwarm>();
  readonly #load = new Map<string, number>();
  readonly #pending = new Map<string, Pending>();
  /** Pieces in flight per (task, requester), so a schedule call never scans every pending assignment. */
  readonly #byRequester = new Map<string, Set<number>>();

  constructor(opts: SchedulerOptions) {
    super();
    this.#opts = { ...opts, assignmentTimeoutMs: opts.assignmentTimeoutMs ?? 60_000, policy: opts.policy ?? rarestFirst };
  }

  peerJoined(peerId: string, uploads: boolean, labels?: Record<string, string>): void {
    if (this.#peers.has(peerId)) this.peerLeft(peerId);
    this.#peers.set(peerId, { uploads, labels, tasks: new Set() });
  }

  /** A peer went away: its pieces stop being offered and everything it had in flight is released. */
  peerLeft(peerId: string): void {
    const peer = this.#peers.get(peerId);
    if (!peer) return;
    for (const taskId of peer.tasks) this.#dropFromTask(taskId, peerId);
    for (const [key, p] of this.#pending) if (p.requester === peerId || p.from === peerId) this.#release(key, p);
    this.#peers.delete(peerId);
    this.#load.delete(peerId);
  }

  taskJoined(peerId: string, taskId: string, have: readonly number[] = []): void {
    const peer = this.#peers.get(peerId);
    if (!peer) return;
    peer.tasks.add(taskId);
    const swarm = this.#swarm(taskId);
    for (const n of have) this.#addHolder(swarm, n, peerId);
  }

  taskLeft(peerId: string, taskId: string): void {
    this.#peers.get(peerId)?.tasks.delete(taskId);
    this.#dropFromTask(taskId, peerId);
  }

  /** Chooses sources for up to `max` of the pieces `requester` wants, and books their upload slots. */
  schedule(taskId: string, requester: string, want: readonly number[], max: number, now = Date.now()): Choice[] {
    const swarm = this.#swarm(taskId);
    const pendingHere = this.#byRequester.get(`${taskId}\0${requester}`);
    const choices = this.#opts.policy(this.#view(swarm), { requester, want: pendingHere ? want.filter((n) => !pendingHere.has(n)) : want, max });
    for (const c of choices) {
      const p: Pending = { taskId, requester, piece: c.piece, from: c.from, at: now };
      this.#pending.set(pendingKey(p), p);
      const rk = `${taskId}\0${requester}`;
      let set = this.#byRequester.get(rk);
      if (!set) this.#byRequester.set(rk, (set = new Set()));
      set.add(c.piece);
      this.#load.set(c.from, (this.#load.get(c.from) ?? 0) + 1);
      swarm.inflight.set(c.piece, (swarm.inflight.get(c.piece) ?? 0) + 1);
    }
    return choices;
  }

  /** Frees the slot booked for an assignment without learning anything from it. */
  release(taskId: string, requester: string, piece: number): void {
    const key = pendingKey({ taskId, requester, piece });
    const p = this.#pending.get(key);
    if (p) this.#release(key, p);
  }

  /** A peer reports how fetching `piece` from `from` went. */
  pieceResult(taskId: string, requester: string, piece: number, from: string, ok: boolean, reason?: string): void {
    this.release(taskId, requester, piece);
    const swarm = this.#swarm(taskId);
    if (ok) {
      if (this.#peers.has(requester)) this.#addHolder(swarm, piece, requester);
      return;
    }
    if (from === SUPERNODE || reason === 'cancelled') return;
    if (reason === 'corrupt') {
      this.#blacklist(taskId, swarm, from, 'served a corrupt piece');
      return;
    }
    const f = (swarm.failures.get(from) ?? 0) + 1;
    swarm.failures.set(from, f);
    if (f >= this.#opts.failuresBeforeBlacklist) this.#blacklist(taskId, swarm, from, `${f} failed transfers`);
  }

  /** Frees slots booked by assignments nobody reported back on. */
  sweep(now = Date.now()): void {
    for (const [key, p] of this.#pending) if (now - p.at > this.#opts.assignmentTimeoutMs) this.#release(key, p);
  }

  isBlacklisted(taskId: string, peerId: string): boolean {
    return this.#tasks.get(taskId)?.blacklist.has(peerId) ?? false;
  }

  holders(taskId: string, piece: number): ReadonlySet<string> {
    return this.#tasks.get(taskId)?.holders.get(piece) ?? EMPTY;
  }

  load(peerId: string): number {
    return this.#load.get(peerId) ?? 0;
  }

  get peerCount(): number {
    return this.#peers.size;
  }

  #view(swarm: TaskSwarm): SwarmView {
    return {
      holders: (n) => swarm.holders.get(n) ?? EMPTY,
      inflight: (n) => swarm.inflight.get(n) ?? 0,
      load: (id) => this.#load.get(id) ?? 0,
      slots: (id) => (id === SUPERNODE ? this.#opts.supernodeSlots : this.#opts.peerSlots),
      uploads: (id) => this.#peers.get(id)?.uploads ?? false,
      blacklisted: (id) => swarm.blacklist.has(id),
      labels: (id) => this.#peers.get(id)?.labels,
    };
  }

  #swarm(taskId: string): TaskSwarm {
    let s = this.#tasks.get(taskId);
    if (!s) {
      s = { holders: new Map(), inflight: new Map(), blacklist: new Set(), failures: new Map() };
      this.#tasks.set(taskId, s);
    }
    return s;
  }

  #addHolder(swarm: TaskSwarm, n: number, peerId: string): void {
    let set = swarm.holders.get(n);
    if (!set) swarm.holders.set(n, (set = new IndexedSet()));
    set.add(peerId);
  }

  #dropFromTask(taskId: string, peerId: string): void {
    const swarm = this.#tasks.get(taskId);
    if (!swarm) return;
    for (const set of swarm.holders.values()) set.delete(peerId);
  }

  #blacklist(taskId: string, swarm: TaskSwarm, peerId: string, reason: string): void {
    if (swarm.blacklist.has(peerId)) return;
    swarm.blacklist.add(peerId);
    this.emit('peer:blacklisted', { taskId, peerId, reason });
  }

  #release(key: string, p: Pending): void {
    this.#pending.delete(key);
    const rk = `${p.taskId}\0${p.requester}`;
    const set = this.#byRequester.get(rk);
    set?.delete(p.piece);
    if (set?.size === 0) this.#byRequester.delete(rk);
    const load = (this.#load.get(p.from) ?? 1) - 1;
    if (load > 0) this.#load.set(p.from, load);
    else this.#load.delete(p.from);
    const swarm = this.#tasks.get(p.taskId);
    if (swarm) {
      const n = (swarm.inflight.get(p.piece) ?? 1) - 1;
      if (n > 0) swarm.inflight.set(p.piece, n);
      else swarm.inflight.delete(p.piece);
    }
  }
}

function pendingKey(p: { taskId: string; requester: string; piece: number }): string {
  return `${p.taskId}\0${p.requester}\0${p.piece}`;
}
