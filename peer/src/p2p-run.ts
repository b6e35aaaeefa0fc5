/**
 * A download run's loop with its supernode: what it wants, the assignments it gets, the transfers it starts, and what
 * it reports back. Conductor (conductor.ts) runs it and falls back to the origin when it ends with the supernode gone.
 */
import { setMaxListeners } from 'node:events';
import { describeError, originError, paceAll, type Assignment, type Logger, type TaskInfo, type WantResult } from '@damselfly/shared';
import type { ConductorComponents, ConductorOptions, DownloadRequest } from './conductor.js';
import type { LocalTask } from './local-task.js';
import { sameObject } from './local-store.js';
import type { SupernodeClient } from './supernode-client.js';
import type { Wants } from './wants.js';
import { fetchPiece } from './piece-fetcher.js';
import { Nudge } from './nudge.js';
import { endgamePieces } from './endgame.js';
import { INFLIGHT_WINDOW_MS, SaturationClock, inflightBounds, startInflight, tuneInflight } from './inflight.js';
import { failureReason, judgeFailure } from './piece-failure.js';
import { peerError } from './errors.js';

/** How long a run whose wanted pieces are all in waits for more Range readers before it closes. */
export const LINGER_MS = 2_000;

/** What a run needs from the conductor it belongs to. */
export interface P2pHost {
  readonly req: DownloadRequest;
  readonly opts: Required<ConductorOptions>;
  readonly c: ConductorComponents;
  readonly log: Logger;
  readonly wants: Wants;
  /** Calls `wake` whenever a reader adds wants (replacing the previous one). */
  onWant(wake: () => void): void;
  /** Waits up to `ms` for new wants; false (and the run takes no more) if none came. */
  idle(ms: number, signal: AbortSignal): Promise<boolean>;
}

/**
 * Wants a run stated with its task's registration (a Range reader's pieces), the in-flight limit stated with them, the
 * assignments the reply carried and those pushed since; `drop` gives them back when no run takes them.
 */
export interface FirstWants {
  pieces: number[];
  max: number;
  assignments: Assignment[];
  pushed: Assignment[];
  drop(): void;
}

/** The pieces a task holds and their hashes, for a registration. */
export function haveOf(task: LocalTask | undefined): { have?: number[]; haveSha?: string[] } {
  if (!task) return {};
  const have = task.present();
  return { have, haveSha: have.map((n) => task.sha(n)!) };
}

/**
 * The task's loop with the supernode: says once what it wants and how much it can take (`pieces:want`), starts every
 * assignment the reply and later pushes bring, reports each result, and says more only when its wants grow (a new
 * Range read), its in-flight limit changes or it stops. Nothing is asked on a timer: the loop wakes on events (an
 * assignment, a piece done, a new want, the supernode gone); local timers only re-tune the in-flight limit (every
 * 2 s) and notice a piece in flight turning slow (endgame).
 */
export async function runP2p(h: P2pHost, task: LocalTask, client: SupernodeClient, signal: AbortSignal, first?: FirstWants): Promise<void> {
  type Transfer = { ac: AbortController; startedAt: number; promise: Promise<void> };
  const inflight = new Map<number, Transfer>();
  /** Endgame second sources, by piece; and pieces that had their one chance of one. */
  const seconds = new Map<number, Transfer>();
  const asked = new Set<number>();
  /** How long this run's pieces took (their first transfer), for telling a slow one. */
  const durations: number[] = [];
  let endgameTimer: NodeJS.Timeout | undefined;
  // The in-flight limit, adapted to what this download measures (see inflight.ts).
  const bounds = inflightBounds(h.opts.parallelPieces);
  let limit = startInflight(h.opts.parallelPieces);
  const saturation = new SaturationClock();
  const fullness = () => saturation.update(performance.now(), inflight.size >= limit.limit);
  let received = 0;
  let windowStart = received;
  const tuner = setInterval(() => {
    const was = limit.limit;
    limit = tuneInflight(limit, { rate: ((received - windowStart) * 1000) / INFLIGHT_WINDOW_MS, saturated: saturation.take(performance.now(), INFLIGHT_WINDOW_MS) }, bounds);
    windowStart = received;
    if (limit.limit !== was) {
      fullness();
      news.poke();
    }
  }, INFLIGHT_WINDOW_MS);
  const attempts = new Map<number, number>();
  const peerAttempts = new Map<number, number>();
  let reregister = false;
  let lost = false;
  const local = new AbortController();
  const stop = AbortSignal.any([signal, local.signal]);
  // Every in-flight piece listens on these: many listeners are expected, not a leak.
  setMaxListeners(0, stop, signal);
  let fatal: unknown;
  const news = new Nudge();
  const taskId = task.info.taskId;
  /** Pieces the supernode was told this run wants, and the in-flight limit it was told. */
  let announced = new Set<number>();
  let announcedMax = 0;

  const sources = h.c.sources;
  const pace = paceAll([h.c.limits?.download]);
  /** Starts a transfer; `second`: an endgame second source for a piece already in flight. */
  const start = (assigned: Assignment, second = false) => {
    // The supernode's pieces are fetched where this peer reached the supernode itself (the session it authenticated,
    // over TLS the certificate it checked), whatever an assignment says: its framed block hashes are trusted for
    // what they are only because they come from the supernode.
    const a = assigned.from === 'supernode' ? { ...assigned, base: client.url } : assigned;
    const t0 = performance.now();
    const ac = new AbortController();
    // Held by the transfer record: the winner of an endgame pair cancels the other through it.
    const own = AbortSignal.any([stop, ac.signal]);
    const other = () => (second ? inflight : seconds).get(a.piece);
    const p = fetchPiece(task, a, {
      client: h.c.cluster,
      timeoutMs: h.opts.pieceTimeoutMs,
      // Under a download limit every source looks slow: judge them against a share of the limit, not beyond it. A
      // relay goes at its own source's pace: cutting it would only send the piece's next copy to the supernode.
      minBytesPerSecond: a.relay ? 0 : h.opts.downloadRate > 0 ? Math.min(h.opts.pieceMinRate, h.opts.downloadRate / 4) : h.opts.pieceMinRate,
      pace,
      // Keyed by address: the supernode is one source whatever the task.
      ...(sources ? { sourceRate: () => sources.rate(a.base) } : {}),
      onBytes: (n: number) => {
        received += n;
        sources?.add(a.base, n);
      },
      signal: own,
      firstBlock: h.wants.firstBlock(task, a.piece),
    })
      .then((bytes) => {
        const ms = performance.now() - t0;
        h.log.debug({ piece: a.piece, from: a.from, ms: Math.round(ms), second: second || undefined }, 'piece:verified');
        // The rate it achieved: the supernode learns each source's capacity from these.
        client.notify({ type: 'piece:result', taskId, piece: a.piece, from: a.from, ok: true, rate: Math.round((bytes * 1000) / Math.max(1, ms)) });
        h.c.metrics.downloadBytes.inc({ source: a.from === 'supernode' ? 'supernode' : 'peer' }, bytes);
        if (!second) durations.push(ms);
        else h.c.metrics.endgameWins.inc();
        // The endgame race is over: the other transfer of this piece stops and frees its source.
        other()?.ac.abort();
      })
      .catch((err: unknown) => {
        if (own.aborted) {
          // Our own cancellation: free the slot booked for it at once, and blame nobody.
          client.giveBack(taskId, a);
          return;
        }
        const reason = failureReason(err);
        client.notify({ type: 'piece:result', taskId, piece: a.piece, from: a.from, ok: false, reason });
        h.c.metrics.pieceFailures.inc({ reason });
        h.log.warn({ piece: a.piece, from: a.from, reason, second: second || undefined, err: describeError(err) }, 'piece:failed');
        // One of an endgame pair failed while the other goes on: that one decides the piece.
        if (other()) return;
        // Wanted again, and said so (the supernode also re-adds it on the report): the answer to that says whether
        // the task still exists there, so a run never waits for a push that will not come.
        announced.delete(a.piece);
        const fromSupernode = a.from === 'supernode';
        const counter = fromSupernode ? attempts : peerAttempts;
        const tries = (counter.get(a.piece) ?? 0) + 1;
        counter.set(a.piece, tries);
        const verdict = judgeFailure(err, { taskId, piece: a.piece, fromSupernode, tries, pieceAttempts: h.opts.pieceAttempts });
        if (verdict === 'reregister') reregister = true;
        else if (verdict !== 'retry') fatal = verdict.fatal;
      })
      .finally(() => {
        const map = second ? seconds : inflight;
        if (map.get(a.piece) === record) map.delete(a.piece);
        fullness();
        news.poke();
      });
    const record: Transfer = { ac, startedAt: t0, promise: p };
    (second ? seconds : inflight).set(a.piece, record);
    fullness();
  };
  const take = (list: Assignment[]) => {
    for (const a of list) {
      // Already arriving (the supernode let go of an earlier assignment of it): its report settles both.
      if (inflight.has(a.piece) || seconds.has(a.piece)) continue;
      if (task.has(a.piece) || stop.aborted) client.giveBack(taskId, a);
      else start(a);
    }
    news.poke();
  };
  const untake = client.assignments(taskId, take);
  if (first) {
    // Said with the registration: not said again unless the wants grow or the limit changes.
    if (first.pieces.length) {
      announced = new Set(first.pieces);
      announcedMax = first.max;
    }
    take([...first.assignments, ...first.pushed.splice(0)]);
  }
  const onClose = () => {
    lost = true;
    news.poke();
  };
  client.on('close', onClose);
  // Closed while the run was being set up (its registration's wants need no request that would have failed): nothing
  // would wake a run waiting for the pushes of a connection that is gone.
  if (!client.connected) lost = true;
  h.onWant(() => news.poke());

  try {
    for (;;) {
      if (fatal) throw fatal;
      signal.throwIfAborted();
      if (lost) throw peerError('DF_SUPERNODE_UNAVAILABLE', `${client.url}: connection closed`);
      const want = h.wants.missing(task).filter((n) => !inflight.has(n) && !seconds.has(n));
      if (want.length === 0 && inflight.size === 0 && seconds.size === 0) {
        if (!task.missing().length || !(await h.idle(LINGER_MS, signal))) return;
        continue;
      }
      if (reregister) {
        // The supernode let go of this peer's origin credentials (unused too long, or it restarted): hand them
        // over again, and say again what this run wants.
        reregister = false;
        const again = await client.request<TaskInfo>({ type: 'task:register', url: h.req.url.href, digest: task.info.digest, headers: h.req.headers, ...haveOf(task) }, { signal });
        // A record made again meanwhile (the object changed, the supernode lost its copy) may be of another version
        // or cut: this run's pieces are not built on (the run fails and its task is dropped; the next one starts anew).
        if (!task.info.digest && !sameObject(task.info, again)) {
          throw originError('ORIGIN_CHANGED', `${task.info.taskId} is ${again.validator ?? 'without ETag'} at the supernode now, not ${task.info.validator ?? 'without ETag'}`);
        }
        announced = new Set();
      }
      const max = limit.limit;
      if (want.length && (max !== announcedMax || want.some((n) => !announced.has(n)))) {
        announced = new Set(want);
        announcedMax = max;
        const readers = h.wants.readers(task, want);
        const res = await client.request<WantResult>({ type: 'pieces:want', taskId, want, max, ...(readers.length ? { readers } : {}) }, { signal });
        take(res.assignments);
      }
      // Everything needed is in flight: a piece coming slowly gets a second source (see endgame.ts).
      const now = performance.now();
      const eg = endgamePieces({
        unrequested: want.length,
        inflight: [...inflight].map(([piece, t]) => ({ piece, startedAt: t.startedAt, asked: asked.has(piece) })),
        room: max - inflight.size - seconds.size,
        durations,
        now,
      });
      clearTimeout(endgameTimer);
      if (eg.nextAt < Infinity) endgameTimer = setTimeout(() => news.poke(), Math.max(0, eg.nextAt - now) + 1);
      if (eg.pieces.length) {
        for (const n of eg.pieces) asked.add(n);
        const res = await client.request<WantResult>({ type: 'pieces:endgame', taskId, pieces: eg.pieces }, { signal });
        for (const a of res.assignments) {
          // The piece may have landed while the request was out: its second source is let go at once.
          if (inflight.has(a.piece) && !seconds.has(a.piece) && !task.has(a.piece)) start(a, true);
          else client.giveBack(taskId, a);
        }
      }
      await news.next(signal);
    }
  } finally {
    clearInterval(tuner);
    clearTimeout(endgameTimer);
    untake();
    client.off('close', onClose);
    h.onWant(() => {});
    // Nothing more for this run: the supernode stops looking for sources for it.
    if (!lost && announced.size) client.request({ type: 'pieces:want', taskId, want: [], max: 0 }, { timeoutMs: 5_000 }).catch(() => {});
    if (inflight.size || seconds.size) {
      // Losing the supernode does not waste pieces already coming from peers.
      if (fatal || signal.aborted) local.abort();
      await Promise.allSettled([...inflight.values(), ...seconds.values()].map((t) => t.promise));
    }
  }
}

