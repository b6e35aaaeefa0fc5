/**
 * The dfdaemon's cache GC: the shared eviction policy applied to the local store. A task is in use while a download,
 * a client stream or an upload holds it. Under disk pressure (a write just failed for lack of space) the cache is
 * shrunk to the low watermark of what it holds now, ignoring the grace for idle tasks: space is needed at once.
 */
import { describeError, planEvictions, type EvictionReason, type Logger } from '@damselfly/shared';
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
  const used = entries.reduce((s, e) => s + e.bytes, 0);
  const plan = planEvictions(entries, {
    // Under pressure the quota is what the cache holds now: it shrinks to its low watermark.
    quota: opts.pressure ? Math.min(opts.quota, Math.max(1, used)) : opts.quota,
    high: opts.pressure ? Math.min(opts.high, opts.low) : opts.high,
    low: opts.low,
    ttlMs: opts.ttlMs,
    graceMs: opts.pressure ? 0 : (opts.graceMs ?? 60_000),
    maxTasks: opts.maxTasks,
    now,
  });
  const evicted: GcResult['evicted'] = [];
  let freed = 0;
  for (const e of plan.evict) {
    // Asked again at each removal: the ones before it took a while, and the task may have been taken up meanwhile (a
    // download, a client or an upload leased it, or touched it). Such a task stays; the next pass sees it as it is.
    const t = store.get(e.id);
    if (!t || t.inUse || t.lastAccess > now) continue;
    try {
      await store.remove(e.id);
    } catch (err) {
      // One removal that fails (a disk error) does not stop the pass: the others may still free what is needed.
      log.warn({ taskId: e.id, err: describeError(err) }, 'gc:remove-failed');
      continue;
    }
    const why = opts.pressure && e.why === 'quota' ? 'disk_full' : e.why;
    evicted.push({ taskId: e.id, why });
    freed += e.bytes;
    log.info({ taskId: e.id, bytes: e.bytes, why }, 'task:evicted');
  }
  if (plan.overQuota && !opts.pressure) log.warn({ used: plan.usedAfter, quota: opts.quota }, 'gc:over-quota (everything left is in use)');
  return { evicted, freedBytes: freed, usedBytes: plan.usedAfter };
}
