/**
 * The supernode's disk GC: the shared eviction policy applied to seeded tasks. A task is in use while it is being
 * seeded, served, or has peers in it; those are never evicted. An evicted task is forgotten entirely (record, piece
 * hashes, data file, scheduling state, held credentials): a later request seeds it again from the origin.
 */
import { carryOut, planPass, type EvictionReason, type Logger } from '@damselfly/shared';
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
  const policy = { quota: opts.quota, high: opts.high, low: opts.low, ttlMs: opts.ttlMs, graceMs: opts.graceMs ?? 60_000, maxTasks: opts.maxTasks, now };
  // Under pressure, as on a dfdaemon (see planPass).
  const plan = planPass(entries, policy, opts.pressure ?? false);
  const done = await carryOut(plan, {
    pressure: opts.pressure ?? false,
    log,
    // A peer may have registered, or a piece be served or seeded, meanwhile.
    stillEvictable: (id) => store.get(id) !== undefined && !inUse(id) && store.lastAccess(id) <= now,
    remove: async (id) => {
      forget(id);
      await store.remove(id);
    },
  });
  const evicted: SupernodeGcResult['evicted'] = done.map((e) => ({ taskId: e.id, bytes: e.bytes, why: e.why }));
  if (plan.overQuota && !opts.pressure) log.warn({ used: plan.usedAfter, quota: opts.quota }, 'gc:over-quota (everything left is in use)');
  return { evicted, usedBytes: plan.usedAfter, tasks: entries.length - evicted.length };
}
