/**
 * Cache GC: evicts whole tasks, least recently used first, when the cache passes the high watermark of its quota
 * (down to the low watermark), and tasks unused for longer than the TTL. Never a task in use (a download, a client
 * stream or an upload holds it) and never one touched in the last minute (it may be about to be used).
 */
import type { Logger } from '@damselfly/shared';
import type { LocalStore } from './local-store.js';
import type { LocalTask } from './local-task.js';

export interface GcOptions {
  /** Bytes; 0 = no quota. */
  quota: number;
  /** Fractions of the quota. */
  high: number;
  low: number;
  /** Milliseconds since last access after which an idle task is removed; 0 = never. */
  ttlMs: number;
  /** Recently touched tasks are never evicted. */
  graceMs?: number;
}

export interface GcResult {
  evicted: { taskId: string; why: 'ttl' | 'quota' }[];
  freedBytes: number;
  usedBytes: number;
}

export function taskBytes(t: LocalTask): number {
  let n = 0;
  for (const p of t.present()) n += t.range(p).length;
  return n;
}

export async function collectGarbage(store: LocalStore, opts: GcOptions, log: Logger, now = Date.now()): Promise<GcResult> {
  const grace = opts.graceMs ?? 60_000;
  const evictable = (t: LocalTask) => t.users === 0 && now - t.lastAccess > grace;
  const evicted: GcResult['evicted'] = [];
  let freed = 0;
  const evict = async (t: LocalTask, why: 'ttl' | 'quota') => {
    const bytes = taskBytes(t);
    await store.remove(t.info.taskId);
    evicted.push({ taskId: t.info.taskId, why });
    freed += bytes;
    log.info({ taskId: t.info.taskId, bytes, why }, 'task:evicted');
  };
  if (opts.ttlMs > 0) {
    for (const t of [...store.tasks()]) if (evictable(t) && now - t.lastAccess > opts.ttlMs) await evict(t, 'ttl');
  }
  let used = 0;
  for (const t of store.tasks()) used += taskBytes(t);
  if (opts.quota > 0 && used > opts.quota * opts.high) {
    const target = opts.quota * opts.low;
    const lru = [...store.tasks()].filter(evictable).sort((a, b) => a.lastAccess - b.lastAccess);
    for (const t of lru) {
      if (used <= target) break;
      const bytes = taskBytes(t);
      await evict(t, 'quota');
      used -= bytes;
    }
    if (used > opts.quota * opts.high) log.warn({ used, quota: opts.quota }, 'gc:over-quota (everything left is in use)');
  }
  return { evicted, freedBytes: freed, usedBytes: used };
}
