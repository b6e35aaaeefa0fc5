/**
 * What a dfget killed with SIGKILL (or by the OOM killer) leaves beside its output: its hidden temporary file and, as
 * a one-shot peer, its cache directory, each as big as the blob, where no temp cleaner looks. A later run writing into
 * the same directory removes those no run has touched for STALE_MS. A live run touches its own every HEARTBEAT_MS
 * (see Scratch), so one that old belongs to a run that is gone, whichever host or container wrote it: a pid says
 * nothing across those, and a shared volume is exactly where two of them meet.
 */
import { lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

export const HEARTBEAT_MS = 60_000;
/** Ten missed heartbeats: a run stopped (SIGSTOP) that long loses its files, and fails at its rename, not silently. */
export const STALE_MS = 10 * HEARTBEAT_MS;

/** `.<output name>.dfget-<pid>-<12 hex>.tmp` (FileSink.tmpPathFor) and `.dfget-XXXXXX` (the one-shot peer's cache). */
const TEMP_FILE = /^\..+\.dfget-\d+-[0-9a-f]{12}\.tmp$/;
const CACHE_DIR = /^\.dfget-[A-Za-z0-9]{6}$/;

/**
 * Removes dead runs' leftovers in `dir`; returns their names. Best effort: a directory it cannot list or an entry it
 * cannot remove (another user's, or removed by another run meanwhile) is left alone, and the run goes on.
 */
export async function sweepLeftovers(dir: string, now = Date.now()): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const file = TEMP_FILE.test(name);
    if (!file && !CACHE_DIR.test(name)) continue;
    const path = join(dir, name);
    try {
      const st = await lstat(path);
      // Only what dfget makes: a regular file, a directory; never a symlink (its target is not ours to judge).
      if (file ? !st.isFile() : !st.isDirectory()) continue;
      if (now - st.mtimeMs < STALE_MS) continue;
      await rm(path, { recursive: true, force: true });
      removed.push(name);
    } catch {
      // Gone already, or not ours to remove.
    }
  }
  return removed;
}
