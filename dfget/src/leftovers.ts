/**
 * What a dfget killed with SIGKILL (or by the OOM killer) leaves beside its output: its hidden temporary file and, as
 * a one-shot peer, its cache directory, each as big as the blob, where no temp cleaner looks. A later run writing into
 * the same directory removes those no run has touched for STALE_MS. A live run touches its own every HEARTBEAT_MS
 * (see Scratch), so one that old belongs to a run that is gone, whichever host or container wrote it: a pid says
 * nothing across those, and a shared volume is exactly where two of them meet (their clocks must agree within
 * STALE_MS). Only this user's entries are judged: a root dfget writing into /tmp leaves other users' alone.
 */
import { lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

export const HEARTBEAT_MS = 60_000;
/** Ten missed heartbeats: a run stopped (SIGSTOP) that long loses its files, and fails at its rename, not silently. */
export const STALE_MS = 10 * HEARTBEAT_MS;

/** The one-shot peer's cache directory beside -O: this prefix and mkdtemp's six characters. */
export const CACHE_DIR_PREFIX = '.dfget-cache-';
/** `.<output name>.dfget-<pid>-<12 hex>.tmp` (FileSink.tmpPathFor). */
const TEMP_FILE = /^\..+\.dfget-\d+-[0-9a-f]{12}\.tmp$/;
const CACHE_DIR = /^\.dfget-cache-[A-Za-z0-9]{6}$/;
/** What a one-shot peer's cache holds (LocalStore): a directory with anything else in it is not one. */
const CACHE_LAYOUT = new Set(['index', 'tasks']);

/**
 * Removes dead runs' leftovers in `dir`; returns their names. Best effort: a directory it cannot list or an entry it
 * cannot remove (removed by another run meanwhile) is left alone, and the run goes on.
 */
export async function sweepLeftovers(dir: string, now = Date.now()): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const uid = process.getuid?.();
  const removed: string[] = [];
  for (const name of names) {
    const file = TEMP_FILE.test(name);
    if (!file && !CACHE_DIR.test(name)) continue;
    const path = join(dir, name);
    try {
      const st = await lstat(path);
      // Only what dfget makes, as it makes it: a regular file, or a directory laid out as its cache; never a symlink
      // (its target is not ours to judge), never another user's.
      if (file ? !st.isFile() : !st.isDirectory()) continue;
      if (uid !== undefined && st.uid !== uid) continue;
      // A file that has another name is a dfdaemon's cached copy linked into place (see FileSink.link), never touched
      // by its run (it would make the dfdaemon drop its copy), so its age says nothing; while the dfdaemon keeps it, it
      // takes no room of its own. Once it is the last name, its age counts like any other's.
      if (file && st.nlink > 1) continue;
      if (now - st.mtimeMs < STALE_MS) continue;
      if (!file && !(await readdir(path)).every((n) => CACHE_LAYOUT.has(n))) continue;
      await rm(path, { recursive: true, force: true });
      removed.push(name);
    } catch {
      // Gone already, or not ours to remove.
    }
  }
  return removed;
}
