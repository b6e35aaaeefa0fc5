/**
 * Cluster state for scheduling (who holds which piece, who uploads how much, who is blacklisted) and the one place
 * where it changes: every event goes through a method here. Decisions are delegated to a pure `SchedulePolicy`.
 *
 * Reports are evidence only about assignments this scheduler made: a `pieceResult` from anyone but the requester of
 * a pending assignment, or naming another source than the assigned one, changes nothing.
 */
import { EventEmitter } from 'node:events';
import { IndexedSet } from './indexed-set.js';
import { SUPERNODE, rarestFirst, type Choice, type SchedulePolicy, type SwarmView } from './policy.js';
import { BlameLedger } from './blame.js';
import { slotsForRate } from './slot-tuner.js';

export interface SchedulerOptions {
  supernodeSlots: number;
  peerSlots: number;
  failuresBeforeBlacklist: number;
  /** An assignment not reported back within this time frees its upload slot. */
  assignmentTimeoutMs?: number;
  policy?: SchedulePolicy;
  /** Rate an upload stream should get (uploadStreamRate): a peer with an upload limit gets slots for that many. */
  streamRate?: number;
  /**
   * Whether the supernode has recorded piece `n`'s block hashes: only then can a peer still fetching it relay it (the
   * downloader needs every block's hash up front). Absent: no relaying.
   */
  hashed?: (taskId: string, n: number) => boolean;
}

interface PeerState {
  uploads: boolean;
  labels: Record<string, string> | undefined;
  tasks: Set<string>;
}

interface TaskSwarm {
  taskId: string;
  holders: Map<number, IndexedSet<string>>;
  inflight: Map<number, number>;
  /**
   * Requesters fetching a piece within MAX_RELAY_DEPTH hops of a whole copy (from the supernode, a holder, or a relay
   * close enough to one): they can relay it on.
   */
  fetching: Map<number, Set<string>>;
  /** Peers that joined the task; the swarm is dropped when the last one leaves. */
  peers: Set<string>;
  blame: BlameLedger;
  /**
   * Peers that failed a transfer, per requester and piece: never tried again for it; after a few, the supernode
   * serves it. By requester first, so a decision finds its requester's failures without a key per wanted piece.
   */
  peerFailures: Map<string, Map<number, Set<string>>>;
  /**
   * Assignments a requester never reported on (its slots were freed by the sweep), by requester, less one per piece
   * it reported fetched since. An honest peer reports every transfer, failed and cancelled ones too; one that books
   * pieces and never fetches them holds its sources' slots and poses as a relay of pieces it does not have.
   */
  unreported: Map<string, number>;
}

interface Pending {
  taskId: string;
  requester: string;
  piece: number;
  from: string;
  at: number;
  /** The source was still fetching the piece: it relays the piece's blocks as they land. */
  relay?: boolean;
  /** A second source for a piece the requester is already fetching (endgame): the first to finish wins. */
  endgame?: boolean;
  /** Relays between this transfer and a whole copy (0: from the supernode or a holder). */
  depth?: number;
  /** The requester was counted among the piece's `fetching` (a relay source) for this transfer. */
  relaySource?: boolean;
  /** Uploads the source had under way with this one: the report's rate times this estimates its capacity. */
  sharing?: number;
}

export interface PeerView {
  id: string;
  uploads: boolean;
  labels: Record<string, string>;
  tasks: number;
  load: number;
  slots: number;
}

export interface TaskView {
  peers: number;
  /** Transfers under way. */
  inflight: number;
  /** Per peer (up to a limit), one character per piece: `1` held, `0` not. */
  holders: Record<string, string>;
  /** Peers blacklisted in the task, with why. */
  blacklisted: Record<string, string>;
}

/** Failed attempts at one piece from peers before a requester gets it from the supernode (which seeds from origin). */
export const PEER_TRIES_PER_PIECE = 2;

/** Weight of a new report in a source's learned capacity. */
const CAPACITY_ALPHA = 0.3;

/**
 * How many relays a piece may pass through from a whole copy: 2 lets a peer relay a piece it gets through a relay
 * (one level of chaining), so a first copy fans out at once. Each hop holds a whole block before passing it on, and
 * one stalled link drops the whole tree under it. Measured: the simulator's Dragonfly scenario (200 peers) ends at
 * 1.31× its bound with 1, 1.26 with 2, 1.23 with 3, 1.47 unlimited; the emulated 12-node swarm at 1.22 with 1 or 2,
 * but at 2.1–2.4 with 3, where a supernode stream cut as too slow took a tree of relays with it and sent their pieces
 * back to the supernode.
 */
export const MAX_RELAY_DEPTH = 2;

/** Assignments at once for a requester that left some unreported in the task, and it is offered as nobody's relay. */
export const UNREPORTED_MAX = 1;

/** Most hops followed up a relay chain when checking that a relay does not feed on the requester. */
const RELAY_WALK_LIMIT = 8;

/** Weight of a new report in a reporting peer's typical transfer rate. */
const FLOW_ALPHA = 0.2;

/** What became of a report. */
export type ReportVerdict = 'accepted' | 'no_assignment' | 'source_mismatch';

const EMPTY: ReadonlySet<string> = new Set();

export interface SchedulerEvents {
  'peer:blacklisted': [{ taskId: string; peerId: string; reason: string }];
  'peer:reinstated': [{ taskId: string; peerId: string }];
  'peer:discredited': [{ taskId: string; peerId: string; contested: number }];
  /** Sources in a task may have changed (a slot freed, a new holder, a piece recorded): waiting peers may get some. */
  'sources:changed': [string];
  /** An assignment of `requester` in a task ended (reported, timed out, released): it can take one more. */
  'assignment:ended': [string, string];
}

export class Scheduler extends EventEmitter<SchedulerEvents> {
  readonly #opts: Required<SchedulerOptions>;
  readonly #peers = new Map<string, PeerState>();
  readonly #tasks = new Map<string, TaskSwarm>();
  readonly #load = new Map<string, number>();
  /**
   * Uploading peers with a spare slot now, in the order they got one. In a saturated swarm of thousands it is small,
   * and the policy finds a piece's free holders through it instead of walking past hundreds of busy ones.
   */
  readonly #free = new Set<string>();
  /** Upload slots measured for a source (the supernode's, tuned to its uplink), instead of the configured number. */
  readonly #slots = new Map<string, number>();
  readonly #pending = new Map<string, Pending>();
  /** Pieces in flight per (task, requester), so a schedule call never scans every pending assignment. */
  readonly #byRequester = new Map<string, Set<number>>();
  /**
   * What each peer source can upload, bytes/s, learned from reports: a transfer's achieved rate times the uploads its
   * source had under way then (they shared its uplink), smoothed. The supernode's own is measured, not reported.
   */
  readonly #capacity = new Map<string, number>();
  #capacitySum = 0;
  /**
   * What transfers from peers holding the whole piece achieved, bytes/s, smoothed per reporting peer: their median is
   * the rate the supernode's streams should not fall below (see slot-tuner). Per reporter, so one member reporting
   * inflated rates moves only its own entry, not the supernode's stream count.
   */
  readonly #flowByReporter = new Map<string, number>();
  /** The median of `#flowByReporter`, recomputed when asked after a change. */
  #flowMedian: number | undefined;
  #flowDirty = false;
  /** Of those, how many come from the supernode (its streams are shared among a task's downloaders). */
  readonly #fromSupernode = new Map<string, number>();

  constructor(opts: SchedulerOptions) {
    super();
    this.#opts = { hashed: () => false, streamRate: 1024 * 1024, ...opts, assignmentTimeoutMs: opts.assignmentTimeoutMs ?? 60_000, policy: opts.policy ?? rarestFirst };
  }

  peerJoined(peerId: string, uploads: boolean, labels?: Record<string, string>, uploadRate?: number): void {
    if (this.#peers.has(peerId)) this.peerLeft(peerId);
    this.#peers.set(peerId, { uploads, labels, tasks: new Set() });
    if (uploadRate) this.#slots.set(peerId, slotsForRate(uploadRate, this.#opts.streamRate || 1024 * 1024, this.#opts.peerSlots));
    this.#refree(peerId);
  }

  /** Keeps `#free` true for one source after its load, slots or membership changed. */
  #refree(id: string): void {
    if (this.#peers.get(id)?.uploads && this.load(id) < this.slots(id)) this.#free.add(id);
    else this.#free.delete(id);
  }

  /** A peer went away: its pieces stop being offered and everything it had in flight is released. */
  peerLeft(peerId: string): void {
    const peer = this.#peers.get(peerId);
    if (!peer) return;
    for (const [key, p] of this.#pending) if (p.requester === peerId || p.from === peerId) this.#release(key, p);
    for (const taskId of peer.tasks) this.#dropFromTask(taskId, peerId);
    this.#peers.delete(peerId);
    this.#load.delete(peerId);
    this.#slots.delete(peerId);
    this.#free.delete(peerId);
    if (this.#flowByReporter.delete(peerId)) this.#flowDirty = true;
    const cap = this.#capacity.get(peerId);
    if (cap !== undefined) {
      this.#capacity.delete(peerId);
      this.#capacitySum -= cap;
    }
  }

  taskJoined(peerId: string, taskId: string, have: readonly number[] = []): void {
    const peer = this.#peers.get(peerId);
    if (!peer) return;
    peer.tasks.add(taskId);
    const swarm = this.#swarm(taskId);
    swarm.peers.add(peerId);
    for (const n of have) this.#addHolder(swarm, n, peerId);
  }

  taskLeft(peerId: string, taskId: string): void {
    this.#peers.get(peerId)?.tasks.delete(taskId);
    for (const [key, p] of this.#pending) if (p.taskId === taskId && p.requester === peerId) this.#release(key, p);
    this.#dropFromTask(taskId, peerId);
  }

  /** `peerId` no longer holds `piece`. */
  pieceDropped(peerId: string, taskId: string, piece: number): void {
    this.#tasks.get(taskId)?.holders.get(piece)?.delete(peerId);
  }

  /** Every connected peer as the scheduler sees it (for the dashboard). */
  peerViews(): PeerView[] {
    return [...this.#peers].map(([id, p]) => ({ id, uploads: p.uploads, labels: p.labels ?? {}, tasks: p.tasks.size, load: this.load(id), slots: this.slots(id) }));
  }

  /** Who holds what in a task, and who is blacklisted in it (for the dashboard); at most `maxPeers` peers. */
  taskView(taskId: string, pieceCount: number, maxPeers = 64): TaskView | undefined {
    const swarm = this.#tasks.get(taskId);
    if (!swarm) return undefined;
    const peers = [...swarm.peers].slice(0, maxPeers);
    const maps = new Map(peers.map((id) => [id, new Uint8Array(pieceCount)]));
    for (const [n, set] of swarm.holders) {
      if (n >= pieceCount) continue;
      for (const id of set) {
        const m = maps.get(id);
        if (m) m[n] = 1;
      }
    }
    let inflight = 0;
    for (const v of swarm.inflight.values()) inflight += v;
    return {
      peers: swarm.peers.size,
      inflight,
      holders: Object.fromEntries([...maps].map(([id, m]) => [id, Array.from(m).join('')])),
      blacklisted: Object.fromEntries(swarm.blame.blacklist),
    };
  }

  /** Peers in a task now. */
  taskPeers(taskId: string): number {
    return this.#tasks.get(taskId)?.peers.size ?? 0;
  }

  /** Whether `peerId` joined `taskId` (only members of a task may schedule in it). */
  inTask(peerId: string, taskId: string): boolean {
    return this.#peers.get(peerId)?.tasks.has(taskId) ?? false;
  }

  /** Tasks `peerId` has joined. */
  taskCountOf(peerId: string): number {
    return this.#peers.get(peerId)?.tasks.size ?? 0;
  }

  /** Forgets a task entirely (its bytes turned out wrong): nothing of it is offered or scheduled any more. */
  dropTask(taskId: string): void {
    for (const [key, p] of this.#pending) if (p.taskId === taskId) this.#release(key, p);
    const swarm = this.#tasks.get(taskId);
    for (const peerId of swarm?.peers ?? []) this.#peers.get(peerId)?.tasks.delete(taskId);
    this.#tasks.delete(taskId);
  }

  /**
   * Chooses sources for up to `max` of the pieces `requester` wants, and books their upload slots. `downloaders`:
   * peers downloading in the task now, the requester included (the supernode's streams are shared among them);
   * absent, every peer in the task counts.
   */
  schedule(taskId: string, requester: string, want: readonly number[], max: number, now = Date.now(), downloaders?: number): Choice[] {
    const swarm = this.#swarm(taskId);
    const rk = `${taskId}\0${requester}`;
    const pendingHere = this.#byRequester.get(rk);
    let supernodeOnly: Set<number> | undefined;
    let tried: Map<number, Set<string>> | undefined;
    // Failures are rare: no key strings per wanted piece unless there are any.
    for (const [n, failed] of swarm.peerFailures.get(requester) ?? []) {
      (tried ??= new Map()).set(n, failed);
      if (failed.size >= PEER_TRIES_PER_PIECE) (supernodeOnly ??= new Set()).add(n);
    }
    if (swarm.unreported.has(requester)) max = Math.max(0, Math.min(max, UNREPORTED_MAX - (pendingHere?.size ?? 0)));
    const choices = this.#opts.policy(this.#view(swarm, taskId, requester), {
      requester,
      want: pendingHere ? want.filter((n) => !pendingHere.has(n)) : want,
      max,
      supernodeOnly,
      tried,
      downloaders: downloaders ?? swarm.peers.size,
    });
    for (const c of choices) this.#book(swarm, { taskId, requester, piece: c.piece, from: c.from, at: now, relay: c.relay });
    return choices;
  }

  /**
   * Endgame: a second source for pieces `requester` is already fetching (its last ones, from a source that is slow);
   * the first transfer to finish wins and the other is cancelled. Never the source it already has, at most one second
   * source per piece, and only for pieces it has in flight. The pieces do not count against its in-flight limit. A
   * piece `requester` already got bad bytes or failures from PEER_TRIES_PER_PIECE peers for gets no peer as its
   * second source either: it comes from the supernode, as `schedule` decided.
   */
  endgame(taskId: string, requester: string, pieces: readonly number[], now = Date.now()): Choice[] {
    const swarm = this.#tasks.get(taskId);
    if (!swarm) return [];
    const tried = new Map<number, Set<string>>();
    let supernodeOnly: Set<number> | undefined;
    for (const piece of pieces) {
      const p = this.#pending.get(pendingKey({ taskId, requester, piece }));
      if (!p || this.#pending.has(endgameKey(p))) continue;
      const failed = swarm.peerFailures.get(requester)?.get(piece);
      if ((failed?.size ?? 0) >= PEER_TRIES_PER_PIECE) (supernodeOnly ??= new Set()).add(piece);
      tried.set(piece, new Set([...(failed ?? []), p.from]));
    }
    if (!tried.size) return [];
    const choices = this.#opts.policy(this.#view(swarm, taskId, requester), { requester, want: [...tried.keys()], max: tried.size, supernodeOnly, tried, downloaders: swarm.peers.size })
      // The policy keeps failed peers out, not the supernode: the source already at work is never asked twice.
      .filter((c) => !tried.get(c.piece)?.has(c.from));
    for (const c of choices) this.#book(swarm, { taskId, requester, piece: c.piece, from: c.from, at: now, relay: c.relay, endgame: true });
    return choices;
  }

  #learn(source: string, sample: number): void {
    const before = this.#capacity.get(source);
    const now = before === undefined ? sample : before + CAPACITY_ALPHA * (sample - before);
    this.#capacity.set(source, now);
    this.#capacitySum += now - (before ?? 0);
  }

  /**
   * What a transfer from a whole holder typically achieves in this supernode's swarms, bytes/s: the median over the
   * peers that reported one (undefined: none has). Asked twice a second by the slot tuner.
   */
  flowRate(): number | undefined {
    if (this.#flowDirty) {
      this.#flowDirty = false;
      const rates = [...this.#flowByReporter.values()].sort((a, b) => a - b);
      this.#flowMedian = rates.length ? rates[rates.length >> 1] : undefined;
    }
    return this.#flowMedian;
  }

  /** A peer's learned upload capacity, or the swarm's mean where it has none yet (undefined when nothing is known). */
  capacity(id: string): number | undefined {
    return this.#capacity.get(id) ?? (this.#capacity.size ? this.#capacitySum / this.#capacity.size : undefined);
  }

  #book(swarm: TaskSwarm, p: Pending): void {
    this.#pending.set(p.endgame ? endgameKey(p) : pendingKey(p), p);
    if (!p.endgame) {
      p.depth = p.relay ? (this.#pending.get(pendingKey({ taskId: p.taskId, requester: p.from, piece: p.piece }))?.depth ?? 0) + 1 : 0;
      if (p.depth < MAX_RELAY_DEPTH) {
        p.relaySource = true;
        let f = swarm.fetching.get(p.piece);
        if (!f) swarm.fetching.set(p.piece, (f = new Set()));
        f.add(p.requester);
      }
      const rk = `${p.taskId}\0${p.requester}`;
      let set = this.#byRequester.get(rk);
      if (!set) this.#byRequester.set(rk, (set = new Set()));
      set.add(p.piece);
      if (p.from === SUPERNODE) this.#fromSupernode.set(rk, (this.#fromSupernode.get(rk) ?? 0) + 1);
    }
    const load = (this.#load.get(p.from) ?? 0) + 1;
    this.#load.set(p.from, load);
    this.#refree(p.from);
    p.sharing = load;
    swarm.inflight.set(p.piece, (swarm.inflight.get(p.piece) ?? 0) + 1);
  }

  /** Something outside the scheduler made new sources possible in a task (the supernode recorded a piece). */
  wake(taskId: string): void {
    this.emit('sources:changed', taskId);
  }

  /** Pieces `requester` has in flight in `taskId` (assigned, not yet reported). */
  inflightOf(taskId: string, requester: string): number {
    return this.#byRequester.get(`${taskId}\0${requester}`)?.size ?? 0;
  }

  /** Whether `requester` still has a transfer of `piece` assigned (after one of an endgame pair failed, the other). */
  fetching(taskId: string, requester: string, piece: number): boolean {
    return (this.#byRequester.get(`${taskId}\0${requester}`)?.has(piece) ?? false) || this.#pending.has(endgameKey({ taskId, requester, piece }));
  }

  /** Frees the slot booked for an assignment without learning anything from it. */
  release(taskId: string, requester: string, piece: number): void {
    const key = pendingKey({ taskId, requester, piece });
    const p = this.#pending.get(key);
    if (p) this.#release(key, p);
  }

  /**
   * `requester` reports how its assignment of `piece` went. Only the requester of a pending assignment can report on
   * it, and only about the source it was assigned (`from`, when given, must match it).
   */
  pieceResult(taskId: string, requester: string, piece: number, from: string | undefined, ok: boolean, reason?: string, rate?: number): ReportVerdict {
    let key = pendingKey({ taskId, requester, piece });
    let p = this.#pending.get(key);
    // With an endgame second source, `from` says which of the two transfers the report is about.
    const second = this.#pending.get(endgameKey({ taskId, requester, piece }));
    if (second && (!p || (from !== undefined && from !== p.from))) {
      key = endgameKey(second);
      p = second;
    }
    if (!p) return 'no_assignment';
    if (from !== undefined && from !== p.from) return 'source_mismatch';
    this.#release(key, p);
    const swarm = this.#tasks.get(taskId);
    if (!swarm) return 'accepted';
    const mine = swarm.peerFailures.get(requester);
    if (ok) {
      mine?.delete(piece);
      if (mine?.size === 0) swarm.peerFailures.delete(requester);
      const unreported = (swarm.unreported.get(requester) ?? 0) - 1;
      if (unreported > 0) swarm.unreported.set(requester, unreported);
      else swarm.unreported.delete(requester);
      if (p.from !== SUPERNODE) swarm.blame.vouch(requester, p.from);
      // A relay goes at its own source's pace: its rate says nothing of its uplink.
      if (p.from !== SUPERNODE && !p.relay && rate && rate > 0 && this.#peers.has(p.from)) {
        this.#learn(p.from, rate * (p.sharing ?? 1));
        const mine = this.#flowByReporter.get(requester);
        this.#flowByReporter.set(requester, mine === undefined ? rate : mine + FLOW_ALPHA * (rate - mine));
        this.#flowDirty = true;
      }
      if (swarm.peers.has(requester)) this.#addHolder(swarm, piece, requester);
      return 'accepted';
    }
    if (p.from === SUPERNODE || reason === 'cancelled') return 'accepted';
    let byPiece = mine;
    if (!byPiece) swarm.peerFailures.set(requester, (byPiece = new Map()));
    let failed = byPiece.get(piece);
    if (!failed) byPiece.set(piece, (failed = new Set()));
    failed.add(p.from);
    // A relay that stalls or gives up may only be waiting on its own source: that is not held against it (bad bytes
    // are, wherever they come from).
    if (p.relay && reason !== 'corrupt') return 'accepted';
    for (const v of swarm.blame.report(requester, p.from, reason === 'corrupt')) {
      if ('blacklist' in v) this.emit('peer:blacklisted', { taskId, peerId: v.blacklist, reason: v.reason });
      else if ('reinstate' in v) this.emit('peer:reinstated', { taskId, peerId: v.reinstate });
      else this.emit('peer:discredited', { taskId, peerId: v.discredited, contested: v.contested });
    }
    return 'accepted';
  }

  /** Frees slots booked by assignments nobody reported back on. */
  sweep(now = Date.now()): void {
    for (const [key, p] of this.#pending) {
      if (now - p.at <= this.#opts.assignmentTimeoutMs) continue;
      this.#release(key, p);
      const unreported = this.#tasks.get(p.taskId)?.unreported;
      unreported?.set(p.requester, (unreported.get(p.requester) ?? 0) + 1);
    }
  }

  isBlacklisted(taskId: string, peerId: string): boolean {
    return this.#tasks.get(taskId)?.blame.blacklist.has(peerId) ?? false;
  }

  holders(taskId: string, piece: number): ReadonlySet<string> {
    return this.#tasks.get(taskId)?.holders.get(piece) ?? EMPTY;
  }

  load(peerId: string): number {
    return this.#load.get(peerId) ?? 0;
  }

  /** Upload slots of a source now. */
  slots(id: string): number {
    return this.#slots.get(id) ?? (id === SUPERNODE ? this.#opts.supernodeSlots : this.#opts.peerSlots);
  }

  /** Sets a source's upload slots (measured capacity); more slots wake every task's waiting peers. */
  setSlots(id: string, n: number): void {
    const before = this.slots(id);
    this.#slots.set(id, n);
    this.#refree(id);
    if (n > before) for (const taskId of this.#tasks.keys()) this.emit('sources:changed', taskId);
  }

  get peerCount(): number {
    return this.#peers.size;
  }

  /** Tasks with scheduling state (for bounds checks and metrics). */
  get taskCount(): number {
    return this.#tasks.size;
  }

  /** Assignments booked and not yet reported. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  #view(swarm: TaskSwarm, taskId: string, requester: string): SwarmView {
    return {
      fetching: (n) => {
        const f = swarm.fetching.get(n);
        if (!f || !this.#opts.hashed(taskId, n)) return EMPTY;
        // Nobody is sent to a requester that left assignments unreported: it may never fetch what it booked.
        return swarm.unreported.size ? new Set([...f].filter((id) => !swarm.unreported.has(id))) : f;
      },
      holders: (n) => swarm.holders.get(n) ?? EMPTY,
      inflight: (n) => swarm.inflight.get(n) ?? 0,
      load: (id) => this.#load.get(id) ?? 0,
      slots: (id) => this.slots(id),
      free: () => this.#free,
      uploads: (id) => this.#peers.get(id)?.uploads ?? false,
      blacklisted: (id) => !swarm.blame.allowed(requester, id),
      labels: (id) => this.#peers.get(id)?.labels,
      capacity: this.#capacity.size ? (id) => this.capacity(id)! : undefined,
      fromSupernode: () => this.#fromSupernode.get(`${taskId}\0${requester}`) ?? 0,
      relaysFrom: (n, peer, source) => this.#relaysFrom(taskId, n, peer, source),
    };
  }

  /**
   * Follows `peer`'s transfers of piece `n` (its first and any endgame second) up through relays. The walk is short:
   * chains are at most MAX_RELAY_DEPTH deep when booked, and a bound keeps a stale longer one (a relay's source that
   * restarted its fetch elsewhere) from costing more.
   */
  #relaysFrom(taskId: string, n: number, peer: string, source: string): boolean {
    let level = [peer];
    for (let hop = 0; hop < RELAY_WALK_LIMIT && level.length; hop++) {
      const next: string[] = [];
      for (const id of level) {
        const key = { taskId, requester: id, piece: n };
        for (const p of [this.#pending.get(pendingKey(key)), this.#pending.get(endgameKey(key))]) {
          if (!p?.relay) continue;
          if (p.from === source) return true;
          next.push(p.from);
        }
      }
      level = next;
    }
    return false;
  }

  #swarm(taskId: string): TaskSwarm {
    let s = this.#tasks.get(taskId);
    if (!s) {
      s = { taskId, holders: new Map(), inflight: new Map(), fetching: new Map(), peers: new Set(), blame: new BlameLedger(this.#opts.failuresBeforeBlacklist), peerFailures: new Map(), unreported: new Map() };
      this.#tasks.set(taskId, s);
    }
    return s;
  }

  #addHolder(swarm: TaskSwarm, n: number, peerId: string): void {
    let set = swarm.holders.get(n);
    if (!set) swarm.holders.set(n, (set = new IndexedSet()));
    set.add(peerId);
    this.emit('sources:changed', swarm.taskId);
  }

  #dropFromTask(taskId: string, peerId: string): void {
    const swarm = this.#tasks.get(taskId);
    if (!swarm) return;
    for (const set of swarm.holders.values()) set.delete(peerId);
    swarm.peers.delete(peerId);
    swarm.blame.forgetSource(peerId);
    swarm.peerFailures.delete(peerId);
    swarm.unreported.delete(peerId);
    // State lives as long as somebody is in the task: a task nobody is in costs nothing.
    if (swarm.peers.size === 0) this.#tasks.delete(taskId);
  }

  #release(key: string, p: Pending): void {
    this.#pending.delete(key);
    const rk = `${p.taskId}\0${p.requester}`;
    const set = p.endgame ? undefined : this.#byRequester.get(rk);
    set?.delete(p.piece);
    if (set?.size === 0) this.#byRequester.delete(rk);
    if (set && p.from === SUPERNODE) {
      const sn = (this.#fromSupernode.get(rk) ?? 1) - 1;
      if (sn > 0) this.#fromSupernode.set(rk, sn);
      else this.#fromSupernode.delete(rk);
    }
    const load = (this.#load.get(p.from) ?? 1) - 1;
    if (load > 0) this.#load.set(p.from, load);
    else this.#load.delete(p.from);
    this.#refree(p.from);
    const swarm = this.#tasks.get(p.taskId);
    if (swarm) {
      const n = (swarm.inflight.get(p.piece) ?? 1) - 1;
      if (n > 0) swarm.inflight.set(p.piece, n);
      else swarm.inflight.delete(p.piece);
      const f = swarm.fetching.get(p.piece);
      if (f && p.relaySource) {
        f.delete(p.requester);
        if (f.size === 0) swarm.fetching.delete(p.piece);
      }
      this.emit('sources:changed', p.taskId);
    }
    this.emit('assignment:ended', p.taskId, p.requester);
  }
}

function pendingKey(p: { taskId: string; requester: string; piece: number }): string {
  return `${p.taskId}\0${p.requester}\0${p.piece}`;
}

function endgameKey(p: { taskId: string; requester: string; piece: number }): string {
  return `${pendingKey(p)}\0e`;
}
