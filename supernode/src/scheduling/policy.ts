/**
 * Scheduling policy: a pure function of a read-only view of the swarm, so the simulator runs exactly this code.
 * Swap it by passing another `SchedulePolicy` to the supernode (or the simulator).
 */

/** Source id meaning "the supernode itself" (which seeds from the origin if it must). */
export const SUPERNODE = 'supernode';

export interface SwarmView {
  /** Peers that hold piece `n` verified (indexable by position when the set offers `at`). */
  holders(n: number): ReadonlySet<string> & { at?(i: number): string | undefined };
  /** Downloads of piece `n` now under way (they will be holders soon). */
  inflight(n: number): number;
  /** Pieces a peer is uploading right now, across all tasks. */
  load(peerId: string): number;
  /** Upload slots of a peer (or of `SUPERNODE`). */
  slots(peerId: string): number;
  /** Whether a peer may serve uploads at all (one-shot clients do not). */
  uploads(peerId: string): boolean;
  /** Peers blacklisted for this task (served corrupt data, or failed too often). */
  blacklisted(peerId: string): boolean;
  labels(peerId: string): Readonly<Record<string, string>> | undefined;
  /**
   * Peers fetching piece `n` right now close enough to a whole copy (the supernode or a holder, directly or through
   * fewer than MAX_RELAY_DEPTH relays): they relay its blocks as they land, so they are sources before they finish.
   * Absent (or empty) where in-flight relaying is not possible, e.g. while the supernode has not recorded the piece's
   * block hashes, which a downloader needs up front.
   */
  fetching?(n: number): ReadonlySet<string>;
  /**
   * Whether `peer`'s copy of piece `n` is arriving from `source`, directly or through relays. Such a peer is no relay
   * source for `source`: each would wait on the other's blocks until the piece's deadline (a peer whose fetch failed
   * asks again while peers relaying it are still waiting for its blocks).
   */
  relaysFrom?(n: number, peer: string, source: string): boolean;
  /** Pieces the requester is fetching from the supernode now (in this task). */
  fromSupernode?(): number;
  /**
   * Uploading peers with a spare slot now (across tasks; the supernode is not among them). When there are fewer of
   * them than a piece has holders, the policy looks for free holders through this set instead.
   */
  free?(): ReadonlySet<string>;
  /**
   * A peer's upload capacity in bytes/s, as learned from reports (the swarm's mean for a peer not measured yet).
   * Absent while nothing is known: holders are then weighed by load alone.
   */
  capacity?(peerId: string): number;
}

export interface ScheduleInput {
  requester: string;
  /** Missing pieces in the requester's order of preference. */
  want: readonly number[];
  /** Most assignments to return. */
  max: number;
  /** Pieces that failed from peers for this requester too often: only the supernode may serve them now. */
  supernodeOnly?: ReadonlySet<number>;
  /** Sources that already failed this requester for a piece: never the same one twice. */
  tried?: ReadonlyMap<number, ReadonlySet<string>>;
  /**
   * Peers downloading in the task now, the requester included: the supernode's streams are shared among them
   * (distinct first copies to distinct peers), so no one peer takes them all and has to relay everything alone.
   */
  downloaders?: number;
}

export interface Choice {
  piece: number;
  from: string;
  /** `from` is still fetching the piece and relays it block by block. */
  relay?: boolean;
}

export type SchedulePolicy = (view: SwarmView, input: ScheduleInput) => Choice[];

/** Shared topology labels between two peers (zone, rack, host...). */
function affinity(a: Readonly<Record<string, string>> | undefined, b: Readonly<Record<string, string>> | undefined): number {
  if (!a || !b) return 0;
  let n = 0;
  for (const [k, v] of Object.entries(a)) if (b[k] === v) n++;
  return n;
}

/** From this many uploads in flight on, the supernode sends only first copies (pieces no peer holds or fetches). */
const SOURCE_DUPLICATE_LOAD = 4;

/** Expected rates within this factor of each other are taken as equal (then the lower load wins). */
const RATE_MARGIN = 1.5;

const NONE: ReadonlySet<string> = new Set();

/** Most eligible holders examined per piece per decision. */
const CANDIDATES = 16;

/** Iterates a set starting at position `start`, wrapping around once; O(1) to start on an indexable set. */
function* cycle<T>(set: ReadonlySet<T> & { at?(i: number): T | undefined }, start: number): Generator<T> {
  if (start === 0) {
    yield* set;
    return;
  }
  if (set.at) {
    for (let k = 0; k < set.size; k++) yield set.at((start + k) % set.size)!;
    return;
  }
  const head: T[] = [];
  let i = 0;
  for (const x of set) {
    if (i++ < start) head.push(x);
    else yield x;
  }
  yield* head;
}

/** Cheap deterministic hash to spread equal candidates without randomness (reproducible in the simulator). */
function mix(s: string, n: number): number {
  let h = 2166136261 ^ n;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/**
 * Rarest first, load-limited, skipping blacklisted peers, nearest by topology: pieces held (or being fetched) by the
 * fewest peers go first, ties kept in the requester's order; each goes to the holder with free slots that shares the
 * most labels with the requester and would give a new stream the most (its learned capacity over its uploads under
 * way; the least load while nothing is measured); else to the supernode while it has free slots (and, when
 * it is busy, only for pieces not already on their way to some peer). With no whole holder free, a peer still
 * fetching the piece (close enough to a whole copy) relays it before the supernode is asked again, unless its copy
 * comes from the requester itself.
 */
export const rarestFirst: SchedulePolicy = (view, { requester, want, max, supernodeOnly, tried, downloaders = 1 }) => {
  const extraLoad = new Map<string, number>();
  // The requester's share of the supernode's streams; pieces only the supernode may serve now are not held to it.
  const snShare = Math.max(1, Math.ceil(view.slots(SUPERNODE) / Math.max(1, downloaders)));
  let fromSn: number | undefined;
  const loadOf = (p: string) => view.load(p) + (extraLoad.get(p) ?? 0);
  // No uploader has a spare slot and the supernode cannot take this requester: nothing is possible, and in a big
  // saturated swarm most decisions are this one (each freed slot is offered to several waiting peers).
  const free = view.free?.();
  if (free?.size === 0) {
    const snFull = loadOf(SUPERNODE) >= view.slots(SUPERNODE);
    if (snFull || (!supernodeOnly?.size && (view.fromSupernode?.() ?? 0) >= snShare)) return [];
  }
  const myLabels = view.labels(requester);
  const maxAffinity = myLabels ? Object.keys(myLabels).length : 0;
  // Rarity is the holder count as the swarm sees it (O(1) per piece, whatever the swarm size).
  const order = want
    .map((piece, i) => ({ piece, i, rarity: view.holders(piece).size + view.inflight(piece) }))
    .sort((a, b) => a.rarity - b.rarity || a.i - b.i);

  const out: Choice[] = [];
  // Total holders looked at per decision: when the swarm is saturated, stop early instead of walking every piece.
  let budget = 64 * max;
  for (const { piece } of order) {
    if (out.length >= max || budget <= 0) break;
    let best: string | undefined;
    let bestAffinity = -1;
    let bestLoad = Infinity;
    // What a new stream would get from a holder: its capacity shared with what it already uploads (by load alone
    // while no capacity is known).
    let bestRate = -1;
    // In a swarm of thousands, a piece can have thousands of holders: weigh at most CANDIDATES eligible ones (and look
    // at no more than 4x that), starting at a position that differs per requester and piece, so equal candidates are
    // spread over all holders without a tie-break hash. Holder sets are indexable: this is bounded work.
    const holders = view.holders(piece);
    const skip = holders.size > CANDIDATES ? mix(requester, piece) % holders.size : 0;
    const peersTried = supernodeOnly?.has(piece) ?? false;
    const failedHere = tried?.get(piece);
    // A big saturated swarm has few free uploaders: a piece's free holders are found among them instead of behind
    // hundreds of busy holders (small swarms keep the spread start below, which places streams better there).
    const viaFree = free !== undefined && holders.size > CANDIDATES && free.size < Math.min(holders.size, 4 * CANDIDATES);
    let seen = 0;
    let looked = 0;
    for (const h of peersTried ? [] : viaFree ? free : cycle(holders, skip)) {
      if (seen >= CANDIDATES || looked++ >= 4 * CANDIDATES) break;
      budget--;
      if (viaFree && !holders.has(h)) continue;
      if (h === requester || view.blacklisted(h) || !view.uploads(h) || failedHere?.has(h)) continue;
      seen++;
      const load = loadOf(h);
      if (load >= view.slots(h)) continue;
      const aff = affinity(myLabels, view.labels(h));
      const rate = view.capacity ? view.capacity(h) / (load + 1) : 1 / (load + 1);
      // Measured rates are noisy: within a margin of each other two holders count as equal and the less loaded wins
      // (in a swarm of equal uplinks, noise alone would otherwise pile streams on whoever measured fastest).
      const better = rate > bestRate * RATE_MARGIN || (rate * RATE_MARGIN >= bestRate && load < bestLoad);
      if (aff > bestAffinity || (aff === bestAffinity && better)) {
        best = h;
        bestAffinity = aff;
        bestLoad = load;
        bestRate = rate;
        // Cannot do better (by load alone), or good enough: an idle, nearest holder after a few were weighed. In a
        // swarm of thousands this keeps a decision to a few holders instead of every candidate.
        if (load === 0 && aff === maxAffinity && (!view.capacity || seen >= 4)) break;
      }
    }
    let relay = false;
    if (!best && !peersTried) {
      // Nobody holds it whole with a free slot: a peer still fetching it relays its blocks as they land, so the
      // supernode sends a piece's first copy once and steps back while peers spread it.
      const fetching = view.fetching?.(piece) ?? NONE;
      const relayViaFree = free !== undefined && fetching.size > 4 * CANDIDATES && free.size < fetching.size;
      for (const h of relayViaFree ? free : fetching) {
        // Most fetchers of a piece in a busy swarm have no spare slot: one set lookup says so (the checks below
        // would skip them too, at four lookups each).
        if (relayViaFree ? !fetching.has(h) : free !== undefined && !free.has(h)) continue;
        if (h === requester || view.blacklisted(h) || !view.uploads(h) || failedHere?.has(h)) continue;
        const load = loadOf(h);
        if (load >= view.slots(h) || load >= bestLoad) continue;
        if (view.relaysFrom?.(piece, h, requester)) continue;
        best = h;
        bestLoad = load;
        relay = true;
        if (load === 0) break;
      }
    }
    if (!best) {
      const snLoad = loadOf(SUPERNODE);
      // Super-seeding: a piece some peer holds or is already fetching is better fetched from a peer soon after than
      // sent again by a busy supernode (its bandwidth split over duplicates slows every first copy, and first copies
      // are what only it can send). An idle supernode still sends duplicates: they cost it nothing.
      const duplicate = !peersTried && (holders.size > 0 || view.inflight(piece) > 0);
      fromSn ??= view.fromSupernode?.() ?? 0;
      const overShare = !peersTried && fromSn >= snShare;
      if (snLoad < view.slots(SUPERNODE) && !overShare && !(duplicate && snLoad >= SOURCE_DUPLICATE_LOAD)) {
        best = SUPERNODE;
        fromSn++;
      }
    }
    if (!best) continue;
    extraLoad.set(best, (extraLoad.get(best) ?? 0) + 1);
    out.push(relay ? { piece, from: best, relay } : { piece, from: best });
  }
  return out;
};
