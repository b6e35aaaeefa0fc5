/**
 * The swarm as an operator wants to see it (`GET /api/v1/dashboard`, behind the operator token like the rest of the
 * REST API; the page at `/dashboard` renders it): live tasks with their piece maps and where their bytes came from,
 * peers with their rates and blacklistings, and origin egress against bytes served over the last minutes.
 */
import type { Scheduler } from '../scheduling/scheduler.js';
import { SUPERNODE } from '../scheduling/policy.js';
import type { TaskStore } from '../resource/task-store.js';
import type { Traffic, HistoryPoint } from './traffic.js';

export interface DashboardSources {
  scheduler: Scheduler;
  store: TaskStore;
  /** Live sessions: peer id → upload base. */
  sessions: Map<string, string>;
  traffic: Traffic;
  /** Bytes/s the supernode is sending now. */
  servedRate: () => number;
}

export interface DashboardView {
  at: number;
  supernode: { slots: number; load: number; servedRate: number; peers: number; tasks: number };
  tasks: {
    taskId: string;
    origin: string;
    size: number;
    pieceSize: number;
    pieceCount: number;
    seeded: number;
    verified: boolean;
    peers: number;
    inflight: number;
    bytes: { supernode: number; peers: number };
    /** The supernode's own pieces, then per peer: one character per piece, `1` held. */
    supernodeMap: string;
    holders: Record<string, string>;
    blacklisted: Record<string, string>;
  }[];
  peers: { id: string; address: string; labels: Record<string, string>; uploads: boolean; tasks: number; load: number; slots: number; up: number; down: number; blacklistedIn: string[] }[];
  history: HistoryPoint[];
}

/** Tasks shown: the most recently used first (a supernode may hold thousands). */
const MAX_TASKS = 50;

export function dashboardView(c: DashboardSources, now = Date.now()): DashboardView {
  const metas = c.store.list().sort((a, b) => c.store.lastAccess(b.taskId) - c.store.lastAccess(a.taskId));
  const blacklistedIn = new Map<string, string[]>();
  const tasks = metas.slice(0, MAX_TASKS).map((m) => {
    const view = c.scheduler.taskView(m.taskId, m.pieceCount);
    for (const id of Object.keys(view?.blacklisted ?? {})) (blacklistedIn.get(id) ?? blacklistedIn.set(id, []).get(id)!).push(m.taskId);
    let supernodeMap = '';
    for (let n = 0; n < m.pieceCount; n++) supernodeMap += c.store.pieceSha(m.taskId, n) === undefined ? '0' : '1';
    return {
      taskId: m.taskId,
      origin: m.origin,
      size: m.contentLength,
      pieceSize: m.pieceSize,
      pieceCount: m.pieceCount,
      seeded: c.store.seededCount(m.taskId),
      verified: m.verified === true,
      peers: view?.peers ?? 0,
      inflight: view?.inflight ?? 0,
      bytes: c.traffic.taskBytes(m.taskId),
      supernodeMap,
      holders: view?.holders ?? {},
      blacklisted: view?.blacklisted ?? {},
    };
  });
  const peers = c.scheduler.peerViews().map((p) => ({
    ...p,
    address: c.sessions.get(p.id) ?? '',
    ...c.traffic.rates(p.id),
    blacklistedIn: blacklistedIn.get(p.id) ?? [],
  }));
  return {
    at: now,
    supernode: { slots: c.scheduler.slots(SUPERNODE), load: c.scheduler.load(SUPERNODE), servedRate: c.servedRate(), peers: peers.length, tasks: metas.length },
    tasks,
    peers,
    history: c.traffic.history,
  };
}
