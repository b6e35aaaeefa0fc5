/**
 * Which cached tasks to evict: a pure policy shared by the supernode's and the dfdaemon's disk GC. Tasks idle longer
 * than the TTL go first; then, when the cache is above the high watermark of its quota, the least recently used go
 * until it is at the low watermark. A task in use is never chosen, nor one touched within the grace (it may be about
 * to be used).
 */
import { statfs } from 'node:fs/promises';
import type { Schema } from './config.js';
import type { Logger } from './logger.js';
import { describeError } from './errors.js';

/** Cache settings both daemons have (quota, watermarks, TTL, interval), under their own env prefix. */
export interface CacheConfig {
  /** Bytes; 0 = half the filesystem holding the data directory. */
  diskQuota: number;
  gcHigh: number;
  gcLow: number;
  taskTtlSeconds: number;
  gcIntervalSeconds: number;
  maxTasks: number;
}

export function cacheSchema(envPrefix: string, ttlDefault: number): Schema {
  return {
    diskQuota: { type: 'size', default: 0, min: 0, env: `${envPrefix}_DISK_QUOTA`, doc: 'cache quota, e.g. 50GiB (0 = half the filesystem holding dataDir)' },
    gcHigh: { type: 'int', default: 90, min: 1, max: 100, env: `${envPrefix}_GC_HIGH`, doc: 'GC starts above this % of the quota' },
    gcLow: { type: 'int', default: 80, min: 0, max: 100, env: `${envPrefix}_GC_LOW`, doc: 'GC evicts down to this % of the quota' },
    taskTtlSeconds: { type: 'int', default: ttlDefault, min: 0, env: `${envPrefix}_TASK_TTL_SECONDS`, doc: 'evict tasks unused this long (0 = never)' },
    gcIntervalSeconds: { type: 'int', default: 60, min: 1, env: `${envPrefix}_GC_INTERVAL_SECONDS`, doc: 'how often GC runs' },
    maxTasks: {
      type: 'int',
      default: 100_000,
      min: 1,
      env: `${envPrefix}_MAX_TASKS`,
      doc: 'tasks kept at most: GC evicts the least recently used beyond it (each costs memory and an index record, even one with few bytes, and a client can make many)',
    },
  };
}

/** Cross-field check for a cache config, reported with every other problem. */
export function checkCacheConfig(v: Record<string, unknown>, errors: string[]): void {
  if (typeof v.gcLow === 'number' && typeof v.gcHigh === 'number' && v.gcLow > v.gcHigh) errors.push(`gcLow (${v.gcLow}) must not exceed gcHigh (${v.gcHigh})`);
}

export interface CacheEntry {
  id: string;
  bytes: number;
  lastAccess: number;
  inUse: boolean;
}

export interface EvictionPolicy {
  /** Bytes; must be > 0 (see effectiveQuota). */
  quota: number;
  /** Fractions of the quota. */
  high: number;
  low: number;
  /** Idle time after which a task goes whatever the quota (0 = never). */
  ttlMs: number;
  graceMs: number;
  now: number;
  /** Tasks kept at most, whatever their bytes (absent = no limit). */
  maxTasks?: number;
}

export interface EvictionPlan {
  evict: { id: string; bytes: number; why: EvictionReason }[];
  usedBefore: number;
  usedAfter: number;
  /** Still above the high watermark after evicting everything allowed (everything left is in use). */
  overQuota: boolean;
}

/** Why a task was evicted: unused past the TTL, the cache above its quota, or more tasks than `maxTasks`. */
export type EvictionReason = 'ttl' | 'quota' | 'count';

export function planEvictions(entries: readonly CacheEntry[], p: EvictionPolicy): EvictionPlan {
  const evictable = (e: CacheEntry) => !e.inUse && p.now - e.lastAccess > p.graceMs;
  const evict: EvictionPlan['evict'] = [];
  const usedBefore = entries.reduce((s, e) => s + e.bytes, 0);
  let used = usedBefore;
  const gone = new Set<string>();
  if (p.ttlMs > 0) {
    for (const e of entries) {
      if (evictable(e) && p.now - e.lastAccess > p.ttlMs) {
        evict.push({ id: e.id, bytes: e.bytes, why: 'ttl' });
        gone.add(e.id);
        used -= e.bytes;
      }
    }
  }
  // Past the high watermark, or more tasks than allowed: the least recently used evictable tasks go, first down to
  // the low watermark ('quota'), then, from where that stopped, down to the count ('count').
  const overHigh = used > p.quota * p.high;
  let count = entries.length - evict.length;
  const overCount = () => p.maxTasks !== undefined && count > p.maxTasks;
  if (overHigh || overCount()) {
    const lru = entries.filter((e) => !gone.has(e.id) && evictable(e)).sort((a, b) => a.lastAccess - b.lastAccess);
    let i = 0;
    for (; overHigh && i < lru.length && used > p.quota * p.low; i++) {
      evict.push({ id: lru[i]!.id, bytes: lru[i]!.bytes, why: 'quota' });
      used -= lru[i]!.bytes;
      count--;
    }
    for (; i < lru.length && overCount(); i++) {
      evict.push({ id: lru[i]!.id, bytes: lru[i]!.bytes, why: 'count' });
      used -= lru[i]!.bytes;
      count--;
    }
  }
  return { evict, usedBefore, usedAfter: used, overQuota: used > p.quota * p.high };
}

/** Share of the filesystem a cache may use when no quota is configured. */
export const AUTO_QUOTA_SHARE = 0.5;

/** The configured quota, or (0 = auto) half of the filesystem that holds `dir`. */
export async function effectiveQuota(dir: string, configured: number): Promise<number> {
  if (configured > 0) return configured;
  const s = await statfs(dir);
  return Math.max(1, Math.floor(s.blocks * s.bsize * AUTO_QUOTA_SHARE));
}

/**
 * The plan for one GC pass, on either daemon. A pass made under pressure (a write just found the disk full) takes
 * the quota to be what the cache holds now (a quota larger than the disk never triggers otherwise) and shrinks it to
 * its low watermark at once, with no grace for idle tasks, since room is needed now. Tasks in use stay, as always;
 * what goes for the quota is counted as `disk_full` (see carryOut).
 */
export function planPass(entries: readonly CacheEntry[], p: EvictionPolicy, pressure: boolean): EvictionPlan {
  if (!pressure) return planEvictions(entries, p);
  const used = entries.reduce((s, e) => s + e.bytes, 0);
  return planEvictions(entries, { ...p, quota: Math.min(p.quota, Math.max(1, used)), high: Math.min(p.high, p.low), graceMs: 0 });
}

/** Why an eviction is counted: a quota eviction in a pressure pass is the full disk's. */
function evictionCause(why: EvictionReason, pressure: boolean): EvictionReason | 'disk_full' {
  return pressure && why === 'quota' ? 'disk_full' : why;
}

/**
 * Carries out a plan: each task asked again right before its removal (`stillEvictable`: the removals before it took
 * a while, and it may have been taken up meanwhile; such a task stays, and the next pass sees it as it is then). One
 * removal that fails (a disk error) does not stop the pass: the others may still free what is needed.
 */
export async function carryOut(
  plan: EvictionPlan,
  o: { pressure: boolean; log: Logger; stillEvictable: (id: string) => boolean; remove: (id: string) => Promise<void> },
): Promise<{ id: string; bytes: number; why: EvictionReason | 'disk_full' }[]> {
  const done: { id: string; bytes: number; why: EvictionReason | 'disk_full' }[] = [];
  for (const e of plan.evict) {
    if (!o.stillEvictable(e.id)) continue;
    try {
      await o.remove(e.id);
    } catch (err) {
      o.log.warn({ taskId: e.id, err: describeError(err) }, 'gc:remove-failed');
      continue;
    }
    const why = evictionCause(e.why, o.pressure);
    done.push({ id: e.id, bytes: e.bytes, why });
    o.log.info({ taskId: e.id, bytes: e.bytes, why }, 'task:evicted');
  }
  return done;
}
