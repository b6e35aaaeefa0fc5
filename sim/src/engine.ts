/**
 * Discrete-event swarm simulator driving the supernode's real `Scheduler` (and its pluggable policy) with modelled
 * peers. Each piece transfer is a flow whose rate is its fair share at both ends: min(uploader bandwidth / its active
 * uploads, downloader bandwidth / its active downloads), recomputed whenever a flow starts or ends at either end.
 * Peers behave like dfdaemon's conductor: they tell the supernode's real `Demands` what they want and how many pieces
 * they take at once (`parallel`), start what the reply and later pushes assign (a push reaches the peer one latency
 * after the change that made it possible), report every result, and stay in the swarm as seeds once done.
 */
import { Demands, Scheduler, SUPERNODE, SlotTuner, type Choice, type SchedulePolicy } from '@damselfly/supernode';
import { INFLIGHT_WINDOW_MS, SaturationClock, endgamePieces, inflightBounds, startInflight, tuneInflight, type InflightState } from '@damselfly/peer';
import { BLOCK_SIZE, pieceCountFor, pieceSizeFor } from '@damselfly/shared';
import { EventHeap } from './heap.js';
import { rng } from './rng.js';
import { p2pBound, directBound, lazyBound } from './bound.js';
import type { Scenario } from './scenario.js';

const TASK = '0'.repeat(64);
const enum Ev {
  Join,
  Start,
  Finish,
  Leave,
  /** A node's piece in flight may have turned slow: look at the endgame again. */
  Endgame,
  /** A node's in-flight limit is re-tuned to what it measured over the last window. */
  Inflight,
  /** The supernode re-tunes its upload slots to its uplink (as the real one does twice a second). */
  Tune,
  /** A transfer in slow start doubles its window: its rate cap moves. */
  Ramp,
}

/** Linux's initial congestion window: 10 segments of 1448 bytes. */
export const INITIAL_WINDOW = 10 * 1448;

const TUNE_MS = 500;

interface Node {
  idx: number;
  id: string;
  /** bytes per ms */
  up: number;
  down: number;
  joinAt: number;
  leaveAt: number;
  corrupt: boolean;
  have: Uint8Array;
  haveCount: number;
  /** null: wants the whole blob. */
  wanted: Uint8Array | null;
  wantCount: number;
  wantedHave?: number;
  /**
   * Each piece in flight's first transfer (its keys are the pieces in flight: a second never runs without a first,
   * and takes its place when the first fails), and its endgame second one.
   */
  first: Map<number, Flow>;
  second: Map<number, Flow>;
  /** Pieces that had their one chance of a second source. */
  asked: Set<number>;
  /** How long this node's pieces took (first transfers), ms. */
  durations: number[];
  /** When an Endgame event is due for this node (Infinity: none). */
  endgameAt: number;
  inflightLimit: InflightState;
  saturation: SaturationClock;
  /** Bytes of pieces finished (for its measured rate), and what had arrived at the last window. */
  finishedBytes: number;
  windowBytes: number;
  /** Downloads of a piece from a whole copy, by piece: this node relays them on while they arrive. */
  fetching: Map<number, Flow>;
  ups: Set<Flow>;
  downs: Set<Flow>;
  doneAt: number;
  left: boolean;
  uploaded: number;
  labels?: Record<string, string>;
}

interface Flow {
  id: number;
  from: Node;
  to: Node;
  piece: number;
  remaining: number;
  rate: number;
  last: number;
  version: number;
  live: boolean;
  /** A relay: the source's own download of the piece, which this flow cannot outrun (absent once it completed). */
  upstream?: Flow;
  /** Relays fed by this flow. */
  relays?: Set<Flow>;
  /** When the downloader was assigned it, and when bytes started to move, ms. */
  assignedAt: number;
  liveAt?: number;
  /** When its next slow-start round begins (a Ramp event is due then), ms. */
  rampAt?: number;
  /** An endgame second source. */
  second?: boolean;
}

export interface SimResult {
  scenario: Scenario;
  pieceSize: number;
  pieces: number;
  /** Completion time of each peer that finished, from its own join, in seconds (sorted). */
  completion: number[];
  finished: number;
  unfinished: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  /** Time at which the last peer finished, from the first join, s. */
  makespan: number;
  boundSeconds: number;
  directBoundSeconds: number;
  /** p50 and max divided by the bound. */
  ratioP50: number;
  ratioMax: number;
  /** Bytes the origin served (each piece once, when the supernode first needs it). */
  originBytes: number;
  /** Bytes the supernode uploaded to peers. */
  supernodeBytes: number;
  peerBytes: number;
  corruptDetected: number;
  /** Pieces whose endgame second transfer finished first. */
  endgameWins: number;
  /** Mean over peers of uploaded bytes / (upload bandwidth × time in swarm). */
  uploadUtilisation: number;
  /** Most bytes/s the swarm could move: min(sum of downlinks, source uplink + sum of peer uplinks). */
  capacityBytesPerSecond: number;
  /** Every `timelineStepMs`: completed peers, active flows, aggregate throughput (bytes/s, credited as bytes flow). */
  timeline: { t: number; done: number; flows: number; throughput: number }[];
  events: number;
  wallMs: number;
}

export function simulate(sc: Scenario, opts: { policy?: SchedulePolicy; timelinePoints?: number } = {}): SimResult {
  const wall0 = performance.now();
  const rand = rng(sc.seed);
  const pieceSize = sc.pieceSize ?? pieceSizeFor(sc.fileBytes);
  const pieces = pieceCountFor(sc.fileBytes, pieceSize);
  const pieceLen = (n: number) => Math.min(pieceSize, sc.fileBytes - n * pieceSize);
  const sched = new Scheduler({
    supernodeSlots: sc.supernodeSlots,
    peerSlots: sc.peerSlots,
    failuresBeforeBlacklist: 3,
    assignmentTimeoutMs: Number.MAX_SAFE_INTEGER,
    policy: opts.policy,
    // The supernode records a piece's block hashes as it seeds it (the origin is not the bottleneck here), so a peer
    // fetching a piece from a whole copy can relay it at once.
    hashed: () => !sc.noRelay,
  });
  const heap = new EventHeap();
  // Flushed after every event (the real supernode flushes once per turn of its event loop).
  const demands = new Demands(sched);
  // The supernode's slot tuning, with the real rule: as few streams as fill its uplink at streamRate each.
  const tuner = new SlotTuner(sc.supernodeSlots, sc.supernodeStreamRate ?? 1024 * 1024);
  if (tuner.tuning.streamRate > 0) {
    sched.setSlots(SUPERNODE, tuner.slots);
    heap.push(TUNE_MS, Ev.Tune, 0);
  }
  const source: Node = mkNode(-1, SUPERNODE, sc.sourceUp / 1000, Infinity, 0);
  source.haveCount = pieces;
  const seeded = new Uint8Array(pieces);
  const hotPool: number[] = [];
  if (sc.lazy) for (let i = 0; i < sc.lazy.reads * 2; i++) hotPool.push(Math.floor(rand() * (sc.fileBytes - sc.lazy.readBytes)));

  const nodes: Node[] = [];
  const byId = new Map<string, Node>();
  for (let i = 0; i < sc.peers; i++) {
    const jitter = () => 1 + (rand() * 2 - 1) * sc.bandwidthJitter;
    const n = mkNode(i, `p${i}`, (sc.peerUp * jitter()) / 1000, (sc.peerDown * jitter()) / 1000, rand() * sc.joinSpreadMs);
    n.corrupt = rand() < sc.corruptFraction;
    if (!n.corrupt && rand() < sc.leaveFraction) n.leaveAt = -1; // decided at half-way
    if (sc.zones > 0) n.labels = { zone: `z${i % sc.zones}` };
    if (sc.lazy) {
      n.wanted = new Uint8Array(pieces);
      for (let r = 0; r < sc.lazy.reads; r++) {
        const off = rand() < sc.lazy.hot ? hotPool[Math.floor(rand() * hotPool.length)]! : Math.floor(rand() * (sc.fileBytes - sc.lazy.readBytes));
        for (let p = Math.floor(off / pieceSize); p <= Math.floor((off + sc.lazy.readBytes - 1) / pieceSize); p++) n.wanted[p] = 1;
      }
      n.wantCount = n.wanted.reduce((s, x) => s + x, 0);
    }
    nodes.push(n);
    byId.set(n.id, n);
    heap.push(n.joinAt, Ev.Join, i);
  }

  function mkNode(idx: number, id: string, up: number, down: number, joinAt: number): Node {
    return {
      idx,
      id,
      up,
      down,
      joinAt,
      leaveAt: Infinity,
      corrupt: false,
      have: new Uint8Array(pieces),
      haveCount: 0,
      wanted: null,
      wantCount: pieces,
      first: new Map(),
      second: new Map(),
      asked: new Set(),
      durations: [],
      endgameAt: Infinity,
      inflightLimit: startInflight(sc.parallel),
      saturation: new SaturationClock(),
      finishedBytes: 0,
      windowBytes: 0,
      fetching: new Map(),
      ups: new Set(),
      downs: new Set(),
      doneAt: -1,
      left: false,
      uploaded: 0,
    };
  }

  /** Live and pending flows only: finished ones are dropped, so memory follows the active swarm, not its history. */
  const flows = new Map<number, Flow>();
  let flowIds = 0;
  let now = 0;
  let events = 0;
  let originBytes = 0;
  let supernodeBytes = 0;
  let peerBytes = 0;
  let corruptDetected = 0;
  let endgameWins = 0;
  let activeFlows = 0;
  let finished = 0;
  const wantedMissing = (n: Node) => n.wantCount - countHaveWanted(n);
  const countHaveWanted = (n: Node) => (n.wanted ? n.wantedHave ?? 0 : n.haveCount);

  /** Bytes/ms moving right now over all live flows, and the bytes moved up to `movedAt`: throughput as it flows. */
  let totalRate = 0;
  let moved = 0;
  let movedAt = 0;
  const rtt = 2 * sc.latencyMs;
  const initialWindow = sc.initialWindow ?? INITIAL_WINDOW;
  /**
   * Slow start: in its k-th round trip a transfer may carry initialWindow × 2^k bytes. While that is below its share
   * of the links it is its rate, and the next round's event raises it. (Its unused share is not handed to others:
   * the equal-split model's approximation, as for a flow held back at its other end.)
   */
  function rampCap(f: Flow, rate: number): number {
    if (initialWindow <= 0 || rtt <= 0 || f.liveAt === undefined) return rate;
    // At a round's own event, (now - liveAt) / rtt can come out a hair under the whole number it is (floating point):
    // counted one round short, the event would re-arm itself and the cap would never rise again.
    const rounds = Math.floor((now - f.liveAt) / rtt + 1e-9);
    if (rounds >= 40) return rate;
    const cap = (initialWindow * 2 ** rounds) / rtt;
    if (cap >= rate) return rate;
    const next = f.liveAt + (rounds + 1) * rtt;
    if (f.rampAt !== next) {
      f.rampAt = next;
      heap.push(next, Ev.Ramp, f.id);
    }
    return cap;
  }
  function reschedule(f: Flow): void {
    let rate = rampCap(f, Math.min(f.from.up / f.from.ups.size, f.to.down / f.to.downs.size));
    // A relay passes on blocks as they arrive: never faster than its source's own download (nothing before it starts).
    if (f.upstream) rate = Math.min(rate, f.upstream.live ? f.upstream.rate : 0);
    // A flow limited by its other end keeps its rate: no new event needed (most updates in a big swarm).
    if (rate === f.rate && f.version > 0) return;
    f.remaining -= f.rate * (now - f.last);
    f.last = now;
    totalRate += rate - f.rate;
    f.rate = rate;
    f.version++;
    if (rate > 0) heap.push(now + Math.max(0, f.remaining) / f.rate, Ev.Finish, f.id, f.version);
    if (f.relays) for (const r of f.relays) if (r.live) reschedule(r);
  }
  function touch(a: Node, b: Node): void {
    for (const f of a.ups) reschedule(f);
    for (const f of b.downs) if (f.from !== a) reschedule(f);
  }

  /** What a node tells the supernode it wants: missing, not in flight, wanted. */
  function wantOf(n: Node): number[] {
    const want: number[] = [];
    for (let p = 0; p < pieces; p++) if (!n.have[p] && !n.first.has(p) && (!n.wanted || n.wanted[p])) want.push(p);
    return want;
  }

  /** Starts flows for assignments; they reach their source after `delay` (a reply or push, then the request). */
  function begin(n: Node, choices: Choice[], delay: number, second = false): void {
    if (n.left) {
      for (const c of choices) second ? sched.pieceResult(TASK, n.id, c.piece, c.from, false, 'cancelled') : sched.release(TASK, n.id, c.piece);
      return;
    }
    for (const c of choices) {
      const from = c.from === SUPERNODE ? source : byId.get(c.from)!;
      const f: Flow = { id: flowIds++, from, to: n, piece: c.piece, remaining: pieceLen(c.piece), rate: 0, last: now, version: 0, live: false, assignedAt: now, second };
      const upstream = c.relay ? from.fetching.get(c.piece) : undefined;
      if (upstream) {
        f.upstream = upstream;
        (upstream.relays ??= new Set()).add(f);
      }
      // Whatever it comes from, a piece in flight can be relayed on (the scheduler decides whether it is offered).
      if (!second) n.fetching.set(c.piece, f);
      (second ? n.second : n.first).set(c.piece, f);
      flows.set(f.id, f);
      heap.push(now + delay, Ev.Start, f.id);
    }
    fullness(n);
  }

  /** The other transfer of an endgame pair, if any. */
  const partner = (f: Flow) => (f.second ? f.to.first : f.to.second).get(f.piece);

  /** Forgets `f` as one of its node's transfers of its piece; returns its partner, if one still runs. */
  function settle(f: Flow): Flow | undefined {
    const n = f.to;
    const map = f.second ? n.second : n.first;
    if (map.get(f.piece) === f) map.delete(f.piece);
    fullness(n);
    return partner(f);
  }

  /** A transfer to `n` ended without the piece: as the real peer reports it, the supernode finds another source. */
  function lost(f: Flow): void {
    const other = settle(f);
    // One of an endgame pair failed: the other one decides the piece.
    if (other) {
      // The second becomes the piece's only transfer.
      if (!f.second) {
        other.to.second.delete(other.piece);
        other.second = false;
        other.to.first.set(other.piece, other);
      }
      return;
    }
    if (!f.to.left) demands.failed(TASK, f.to.id, f.piece);
  }

  /** The node's in-flight limit (the real peer's rule), and what it measures it by. */
  const limitOf = (n: Node) => (sc.fixedParallel ? sc.parallel : n.inflightLimit.limit);
  const bounds = inflightBounds(sc.parallel);
  function fullness(n: Node): void {
    n.saturation.update(now, n.first.size >= limitOf(n));
  }
  /** Bytes that reached `n`: finished pieces plus what its live transfers moved so far. */
  function receivedBy(n: Node): number {
    let b = n.finishedBytes;
    for (const f of n.downs) b += pieceLen(f.piece) - Math.max(0, f.remaining - f.rate * (now - f.last));
    return b;
  }

  /** Endgame, by the real peer's rule: second sources for its slow last pieces (see @damselfly/peer endgame). */
  function endgame(n: Node): void {
    if (n.left || n.doneAt >= 0 || sc.noEndgame) return;
    const eg = endgamePieces({
      unrequested: wantedMissing(n) - n.first.size,
      inflight: [...n.first.values()].map((f) => ({ piece: f.piece, startedAt: f.assignedAt, asked: n.asked.has(f.piece) })),
      room: limitOf(n) - n.first.size - n.second.size,
      durations: n.durations,
      now,
    });
    if (eg.nextAt < n.endgameAt) {
      n.endgameAt = eg.nextAt;
      heap.push(eg.nextAt, Ev.Endgame, n.idx);
    }
    if (!eg.pieces.length) return;
    for (const p of eg.pieces) n.asked.add(p);
    // A request and its reply: the second transfer starts a round trip and a request later.
    begin(n, sched.endgame(TASK, n.id, eg.pieces, now), 2 * sc.latencyMs, true);
  }

  /** Forgets a flow, started or not: no longer pending, no longer a source to relay from, no longer relaying. */
  function unlink(f: Flow): void {
    flows.delete(f.id);
    if (f.to.fetching.get(f.piece) === f) f.to.fetching.delete(f.piece);
    f.upstream?.relays?.delete(f);
  }

  function endFlow(f: Flow): void {
    unlink(f);
    if (f.live) totalRate -= f.rate;
    f.rate = 0;
    f.live = false;
    activeFlows--;
    // Sums of floating-point rates drift: with nothing moving, nothing moves.
    if (activeFlows === 0) totalRate = 0;
    f.from.ups.delete(f);
    f.to.downs.delete(f);
    touch(f.from, f.to);
  }

  /**
   * A relay's source stopped downloading the piece: if it got it all, its relays go on at their own pace; if not (a
   * node left), they can never complete and their downloaders ask again.
   */
  function releaseRelays(f: Flow, completed: boolean): void {
    if (!f.relays) return;
    for (const r of [...f.relays]) {
      r.upstream = undefined;
      if (completed) {
        if (r.live) reschedule(r);
        continue;
      }
      if (r.live) endFlow(r);
      else unlink(r);
      // Relays of that relay starve too.
      releaseRelays(r, false);
      // The relay's downloader gives up on it (a stalled relay times out): its booked slot is freed.
      sched.pieceResult(TASK, r.to.id, r.piece, r.from.id, false, 'timeout');
      lost(r);
    }
    f.relays = undefined;
  }

  const timeline: SimResult['timeline'] = [];
  const horizonGuess = Math.max(1, p2pBound(sc.fileBytes, sc.sourceUp, nodes.map((n) => n.down * 1000), nodes.map((n) => n.up * 1000)) * 1000 * 4 + sc.joinSpreadMs);
  const step = horizonGuess / (opts.timelinePoints ?? 200);
  let nextSample = 0;
  let movedAtLastSample = 0;

  for (let e = heap.pop(); e; e = heap.pop()) {
    now = e.at;
    events++;
    // Rates are constant between events: the bytes moved by a sample time are the integral up to it, so throughput
    // is credited as bytes flow, not in bursts when pieces complete.
    while (now >= nextSample) {
      const movedBySample = moved + totalRate * (nextSample - movedAt);
      timeline.push({ t: nextSample / 1000, done: finished, flows: activeFlows, throughput: ((movedBySample - movedAtLastSample) / step) * 1000 });
      movedAtLastSample = movedBySample;
      nextSample += step;
    }
    moved += totalRate * (now - movedAt);
    movedAt = now;
    switch (e.kind) {
      case Ev.Join: {
        const n = nodes[e.ref]!;
        sched.peerJoined(n.id, true, n.labels);
        sched.taskJoined(n.id, TASK);
        // Pushed assignments reach the peer one latency after the supernode made them, and its source one more.
        demands.connect(n.id, (_task, choices) => {
          begin(n, choices, 2 * sc.latencyMs);
          endgame(n);
        });
        begin(n, demands.want(TASK, n.id, wantOf(n), limitOf(n), now), sc.latencyMs);
        if (!sc.fixedParallel) heap.push(now + INFLIGHT_WINDOW_MS, Ev.Inflight, n.idx);
        break;
      }
      case Ev.Start: {
        const f = flows.get(e.ref);
        // A relay dropped before it started (its source's own download failed) is gone already.
        if (!f) break;
        if (f.upstream && !f.to.left && !f.from.left) {
          // A relay passes on verified blocks: bytes start to move once its source has a whole block, so each hop adds
          // a block's time at its source's rate (waiting holds the booked slots, as in the real swarm).
          const up = f.upstream;
          const got = up.live ? pieceLen(up.piece) - Math.max(0, up.remaining - up.rate * (now - up.last)) : 0;
          const need = Math.min(BLOCK_SIZE, pieceLen(f.piece));
          if (got < need) {
            heap.push(now + (up.live && up.rate > 0 ? Math.max(0.01, (need - got) / up.rate) : Math.max(0.1, sc.latencyMs)), Ev.Start, f.id);
            break;
          }
        }
        if (f.to.left || f.from.left) {
          unlink(f);
          releaseRelays(f, false);
          if (!f.to.left) sched.pieceResult(TASK, f.to.id, f.piece, f.from.id, false, 'error');
          lost(f);
          break;
        }
        f.live = true;
        f.liveAt = now;
        activeFlows++;
        f.last = now;
        f.from.ups.add(f);
        f.to.downs.add(f);
        touch(f.from, f.to);
        break;
      }
      case Ev.Ramp: {
        const f = flows.get(e.ref);
        if (f?.live && f.rampAt === now) reschedule(f);
        break;
      }
      case Ev.Finish: {
        const f = flows.get(e.ref);
        if (!f || !f.live || e.version !== f.version) break;
        const n = f.to;
        const len = pieceLen(f.piece);
        endFlow(f);
        // Blocks from a corrupt source fail their check: its relays pass nothing on either.
        releaseRelays(f, !f.from.corrupt);
        f.from.uploaded += len;
        if (f.from === source) {
          supernodeBytes += len;
          if (!seeded[f.piece]) {
            seeded[f.piece] = 1;
            originBytes += len;
          }
        } else peerBytes += len;
        if (f.from.corrupt) {
          corruptDetected++;
          sched.pieceResult(TASK, n.id, f.piece, f.from.id, false, 'corrupt');
          lost(f);
        } else {
          const other = partner(f);
          settle(f);
          if (other) {
            // The endgame race is over: the other transfer is cancelled; relays of it go on from this node's copy.
            if (other.live) endFlow(other);
            else unlink(other);
            releaseRelays(other, true);
            settle(other);
            sched.pieceResult(TASK, n.id, other.piece, other.from.id, false, 'cancelled');
            if (f.second) endgameWins++;
          }
          if (!f.second) n.durations.push(now - f.assignedAt);
          n.finishedBytes += len;
          n.have[f.piece] = 1;
          n.haveCount++;
          if (n.wanted?.[f.piece]) n.wantedHave = (n.wantedHave ?? 0) + 1;
          // As the real peer reports it: the rate the transfer achieved (the scheduler learns capacities from it).
          sched.pieceResult(TASK, n.id, f.piece, f.from.id, true, undefined, (len * 1000) / Math.max(1, now - (f.liveAt ?? f.assignedAt)));
          if (n.leaveAt === -1 && countHaveWanted(n) * 2 >= n.wantCount) {
            n.leaveAt = now;
            heap.push(now, Ev.Leave, n.idx);
          }
          if (wantedMissing(n) === 0 && n.doneAt < 0) {
            n.doneAt = now;
            finished++;
            // As the real peer's run ends: it wants nothing more (and no longer shares the supernode's streams).
            demands.want(TASK, n.id, [], 0);
          }
        }
        endgame(n);
        break;
      }
      case Ev.Inflight: {
        const n = nodes[e.ref]!;
        if (n.left || n.doneAt >= 0) break;
        const got = receivedBy(n);
        const before = n.inflightLimit.limit;
        n.inflightLimit = tuneInflight(n.inflightLimit, { rate: ((got - n.windowBytes) / INFLIGHT_WINDOW_MS) * 1000, saturated: n.saturation.take(now, INFLIGHT_WINDOW_MS) }, bounds);
        n.windowBytes = got;
        // A new limit is announced the way the real peer does: its wants again, with the new in-flight limit.
        if (n.inflightLimit.limit !== before) {
          fullness(n);
          begin(n, demands.want(TASK, n.id, wantOf(n), n.inflightLimit.limit, now), sc.latencyMs);
        }
        // Only while something can still change: a stuck run ends (with the node unfinished) instead of ticking on.
        if (n.first.size > 0 || activeFlows > 0) heap.push(now + INFLIGHT_WINDOW_MS, Ev.Inflight, n.idx);
        break;
      }
      case Ev.Endgame: {
        const n = nodes[e.ref]!;
        if (e.at >= n.endgameAt) n.endgameAt = Infinity;
        endgame(n);
        break;
      }
      case Ev.Tune: {
        let rate = 0;
        for (const f of source.ups) rate += f.rate * 1000;
        sched.setSlots(SUPERNODE, tuner.next(sched.load(SUPERNODE), rate, now, sched.flowRate()));
        // Only while anything else may still happen: the tick alone does not keep a finished run going.
        if (heap.size > 0) heap.push(now + TUNE_MS, Ev.Tune, 0);
        break;
      }
      case Ev.Leave: {
        const n = nodes[e.ref]!;
        n.left = true;
        demands.disconnect(n.id);
        sched.peerLeft(n.id);
        for (const f of [...n.ups]) {
          endFlow(f);
          releaseRelays(f, false);
          lost(f);
        }
        for (const f of [...n.downs]) {
          endFlow(f);
          releaseRelays(f, false);
        }
        break;
      }
    }
    demands.flush(now);
  }

  const stayers = nodes.filter((n) => n.leaveAt === Infinity && !n.corrupt);
  const completion = nodes.filter((n) => n.doneAt >= 0).map((n) => (n.doneAt - n.joinAt) / 1000).sort((a, b) => a - b);
  const q = (p: number) => completion[Math.min(completion.length - 1, Math.floor(p * completion.length))] ?? NaN;
  // For lazy readers the bound is over what they asked for: the union from the source, each peer's own share down.
  const wantedBytes = (n: Node) => (n.wanted ? n.wanted.reduce((s, w, p) => s + (w ? pieceLen(p) : 0), 0) : sc.fileBytes);
  const bound = sc.lazy
    ? lazyBound(
        Array.from(seeded).reduce((s, x, p) => s + (x ? pieceLen(p) : 0), 0),
        stayers.map(wantedBytes),
        sc.sourceUp,
        stayers.map((n) => n.down * 1000),
        stayers.map((n) => n.up * 1000),
      )
    : p2pBound(sc.fileBytes, sc.sourceUp, stayers.map((n) => n.down * 1000), stayers.map((n) => n.up * 1000));
  const firstJoin = Math.min(...nodes.map((n) => n.joinAt));
  const lastDone = Math.max(...nodes.filter((n) => n.doneAt >= 0).map((n) => n.doneAt));
  const util = nodes.filter((n) => n.doneAt >= 0).map((n) => n.uploaded / (n.up * Math.max(1, now - n.joinAt)));
  const pAll = completion.length;
  return {
    scenario: sc,
    pieceSize,
    pieces,
    completion,
    finished: pAll,
    unfinished: stayers.filter((n) => n.doneAt < 0).length,
    p50: q(0.5),
    p90: q(0.9),
    p99: q(0.99),
    max: completion[completion.length - 1] ?? NaN,
    makespan: (lastDone - firstJoin) / 1000,
    boundSeconds: bound,
    directBoundSeconds: directBound(sc.fileBytes, sc.sourceUp, sc.peers),
    ratioP50: q(0.5) / bound,
    ratioMax: (completion[completion.length - 1] ?? NaN) / bound,
    originBytes,
    supernodeBytes,
    peerBytes,
    corruptDetected,
    endgameWins,
    uploadUtilisation: util.reduce((s, x) => s + x, 0) / Math.max(1, util.length),
    capacityBytesPerSecond: Math.min(
      nodes.reduce((s, n) => s + n.down * 1000, 0),
      sc.sourceUp + nodes.reduce((s, n) => s + n.up * 1000, 0),
    ),
    timeline,
    events,
    wallMs: performance.now() - wall0,
  };
}
