/**
 * Telling a full disk from other storage failures. A data-file write says so itself (ENOSPC); the task index
 * (LevelDB) does not: its failed write is a `LEVEL_IO_ERROR` whose errno is only in its message, so an index write
 * that fails is asked of the filesystem instead. Either way the caller gets one answer, `isDiskFull`, and reacts
 * the same (the download gives its space back and the cache shrinks), whichever write happened to hit the limit
 * first.
 */
import { statfs } from 'node:fs/promises';

/**
 * Codes meaning "no room left": the filesystem's own (a full disk, a user's quota), and the errors the stores and the
 * peer make from them.
 */
export const DISK_FULL_CODES: readonly string[] = ['ENOSPC', 'EDQUOT', 'PIECE_DISK_FULL', 'INDEX_DISK_FULL', 'DF_DISK_FULL'];
const FULL = new Set(DISK_FULL_CODES);

export function isDiskFull(err: unknown): boolean {
  return FULL.has((err as { code?: string } | undefined)?.code ?? '');
}

/**
 * Less room left on `path`'s filesystem than one index write can need (LevelDB writes a new table file of up to a
 * few MiB when it compacts), or no inode left. Root may write into the blocks ext4 reserves, so its room is the free
 * blocks, anyone else's the available ones.
 */
const ROOM = 4 * 1024 * 1024;

export async function noRoomOn(path: string): Promise<boolean> {
  try {
    const s = await statfs(path);
    const blocks = process.getuid?.() === 0 ? s.bfree : s.bavail;
    return blocks * s.bsize < ROOM || (s.files > 0 && s.ffree === 0);
  } catch {
    // The filesystem cannot even be asked: whatever failed, it is not known to be a full disk.
    return false;
  }
}
