/**
 * The supernode's disk GC: the shared eviction policy applied to seeded tasks. A task is in use while it is being
 * seeded, served, or has peers in it; those are never evicted. An evicted task is forgotten entirely (record, piece
 * hashes, data file, scheduling state, held credentials): a later request seeds it again from the origin.
 */
import { describeError, planEvictions, type EvictionReason, type Logger } from '@damselfly/shared';
import type { TaskStore } from './task-store.js';

export interface SupernodeGcOptions {
  quota: number;
  high: number;
  low: number;
  ttlMs: number;
  graceMs?: number;
  maxTasks?: number;
  /** A seed just found the disk full: shrink to the low watermark of what is held now, ignoring the grace. */
  pressure?: boolean;
}

export interface SupernodeGcResult {
  evicted: { taskId: string; bytes: number; why: EvictionReason | 'disk_full' }[];
  usedBytes: number;
  tasks: number;
}

export async function collectSupernodeGarbage(
  store: TaskStore,
  busy: (taskId: string) => boolean,
  forget: (taskId: string) => void,
  opts: SupernodeGcOptions,
  log: Logger,
  now = Date.now(),
): Promise<SupernodeGcResult> {
  // In use: read or written (a lease), or busy for the supernode (seeding, peers in it).
  const inUse = (taskId: string) => store.pieces(taskId)?.inUse === true || busy(taskId);
  const entries = [...store.entries()].map((e) => ({ id: e.taskId, bytes: e.bytes, lastAccess: e.lastAccess, inUse: inUse(e.taskId) }));
  const used = entries.reduce((s, e) => s + e.bytes, 0);
  const plan = planEvictions(entries, {
    // Under pressure the quota is what the cache holds now (a quota larger than the disk never triggers): it shrinks
    // to its low watermark, as on a dfdaemon. Tasks in use stay, as always.
    quota: opts.pressure ? Math.min(opts.quota, Math.max(1, used)) : opts.quota,
    high: opts.pressure ? Math.min(opts.high, opts.low) : opts.high,
    low: opts.low,
    ttlMs: opts.ttlMs,
    graceMs: opts.pressure ? 0 : (opts.graceMs ?? 60_000),
    maxTasks: opts.maxTasks,
    now,
  });
  const evicted: SupernodeGcResult['evicted'] = [];
  for (const e of plan.evict) {
    // Asked again at each removal: the ones before it took a while, and the task may have been taken up meanwhile
    // (a peer registered, a piece is being served or seeded). Such a task stays; the next pass sees it as it is then.
    if (!store.get(e.id) || inUse(e.id) || store.lastAccess(e.id) > now) continue;
    forget(e.id);
    try {
      await store.remove(e.id);
    } catch (err) {
      // One removal that fails (a disk error) does not stop the pass: the others may still free what is needed.
      log.warn({ taskId: e.id, err: describeError(err) }, 'gc:remove-failed');
      continue;
    }
    const why = opts.pressure && e.why === 'quota' ? 'disk_full' : e.why;
    evicted.push({ taskId: e.id, bytes: e.bytes, why });
    log.info({ taskId: e.id, bytes: e.bytes, why }, 'task:evicted');
  }
  if (plan.overQuota && !opts.pressure) log.warn({ used: plan.usedAfter, quota: opts.quota }, 'gc:over-quota (everything left is in use)');
  return { evicted, usedBytes: plan.usedAfter, tasks: entries.length - evicted.length };
}
