/**
 * The dfdaemon's cache GC: the shared eviction policy applied to the local store. A task is in use while a download,
 * a client stream or an upload holds it. Under disk pressure (a write just failed for lack of space) the cache is
 * shrunk to the low watermark of what it holds now, ignoring the grace for idle tasks: space is needed at once.
 */
import { carryOut, planPass, type EvictionReason, type Logger } from '@damselfly/shared';
import type { LocalStore, LocalTask } from '@damselfly/peer';

export interface GcOptions {
  /** Bytes, > 0. */
  quota: number;
  /** Fractions of the quota. */
  high: number;
  low: number;
  /** Milliseconds since last access after which an idle task is removed; 0 = never. */
  ttlMs: number;
  /** Recently touched tasks are never evicted. */
  graceMs?: number;
  /** Tasks kept at most. */
  maxTasks?: number;
  /** The disk just filled up: free space now. */
  pressure?: boolean;
}

export interface GcResult {
  evicted: { taskId: string; why: EvictionReason | 'disk_full' }[];
  freedBytes: number;
  usedBytes: number;
}

export function taskBytes(t: LocalTask): number {
  let n = 0;
  for (const p of t.present()) n += t.range(p).length;
  return n;
}

export async function collectGarbage(store: LocalStore, opts: GcOptions, log: Logger, now = Date.now()): Promise<GcResult> {
  const entries = [...store.tasks()].map((t) => ({ id: t.info.taskId, bytes: taskBytes(t), lastAccess: t.lastAccess, inUse: t.inUse }));
  const policy = { quota: opts.quota, high: opts.high, low: opts.low, ttlMs: opts.ttlMs, graceMs: opts.graceMs ?? 60_000, maxTasks: opts.maxTasks, now };
  const plan = planPass(entries, policy, opts.pressure ?? false);
  const done = await carryOut(plan, {
    pressure: opts.pressure ?? false,
    log,
    // A download, a client or an upload may have leased it, or touched it, meanwhile.
    stillEvictable: (id) => {
      const t = store.get(id);
      return t !== undefined && !t.inUse && t.lastAccess <= now;
    },
    remove: (id) => store.remove(id),
  });
  const evicted: GcResult['evicted'] = done.map((e) => ({ taskId: e.id, why: e.why }));
  const freed = done.reduce((s, e) => s + e.bytes, 0);
  if (plan.overQuota && !opts.pressure) log.warn({ used: plan.usedAfter, quota: opts.quota }, 'gc:over-quota (everything left is in use)');
  return { evicted, freedBytes: freed, usedBytes: plan.usedAfter };
}
