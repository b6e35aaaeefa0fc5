/**
 * Where the bytes went, for the dashboard: verified transfers as their requesters report them (who sent how much to
 * whom, per task), and once a second the origin, supernode and peer byte rates for the history chart. Peer-to-peer
 * bytes are known only from reports (the supernode does not see them), so they are credited per finished piece.
 */
import { RateMeters } from '@damselfly/shared';
import { SUPERNODE } from '../scheduling/policy.js';

export interface HistoryPoint {
  /** Seconds since the epoch. */
  t: number;
  /** Bytes/s over the last sample: fetched from origins, sent by the supernode, sent peer to peer. */
  origin: number;
  supernode: number;
  peers: number;
}

/** Five minutes at one sample a second. */
const HISTORY = 300;

export class Traffic {
  readonly #up = new RateMeters();
  readonly #down = new RateMeters();
  readonly #byTask = new Map<string, { supernode: number; peers: number }>();
  #peerBytes = 0;
  #last?: { at: number; origin: number; served: number; peers: number };
  readonly history: HistoryPoint[] = [];

  /** `to` verified `bytes` of a piece it fetched from `from` (a peer id or the supernode). */
  delivered(taskId: string, from: string, to: string, bytes: number): void {
    this.#up.add(from, bytes);
    this.#down.add(to, bytes);
    let t = this.#byTask.get(taskId);
    if (!t) this.#byTask.set(taskId, (t = { supernode: 0, peers: 0 }));
    if (from === SUPERNODE) t.supernode += bytes;
    else {
      t.peers += bytes;
      this.#peerBytes += bytes;
    }
  }

  taskBytes(taskId: string): { supernode: number; peers: number } {
    return this.#byTask.get(taskId) ?? { supernode: 0, peers: 0 };
  }

  forgetTask(taskId: string): void {
    this.#byTask.delete(taskId);
  }

  /** Bytes/s a peer uploaded / downloaded lately (from its reports and those about it). */
  rates(id: string): { up: number; down: number } {
    return { up: this.#up.rate(id), down: this.#down.rate(id) };
  }

  /** One history point from the running totals of origin bytes and supernode bytes served. */
  sample(now: number, originTotal: number, servedTotal: number): void {
    const last = this.#last;
    this.#last = { at: now, origin: originTotal, served: servedTotal, peers: this.#peerBytes };
    if (!last) return;
    const dt = (now - last.at) / 1000;
    if (dt <= 0) return;
    this.history.push({
      t: Math.round(now / 1000),
      origin: (originTotal - last.origin) / dt,
      supernode: (servedTotal - last.served) / dt,
      peers: (this.#peerBytes - last.peers) / dt,
    });
    if (this.history.length > HISTORY) this.history.splice(0, this.history.length - HISTORY);
  }
}
