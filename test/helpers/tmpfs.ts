/** Small tmpfs mounts (a full disk, a read-only filesystem) for tests; needs root, so callers skip without it. */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Why tmpfs mounts cannot be used here, or undefined when they can (tried once, for real). */
export function tmpfsUnavailable(): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'damselfly-tmpfs-probe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'ignore' });
    execFileSync('umount', [dir], { stdio: 'ignore' });
    return undefined;
  } catch (err) {
    return `cannot mount a tmpfs here (needs root): ${(err as Error).message.split('\n')[0]}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Mounts a tmpfs with `options` (e.g. 'size=2m' or 'size=1m,ro') on a fresh directory, unmounted at teardown. */
export async function mountTmpfs(t: { teardown(fn: () => unknown): void }, options: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'damselfly-tmpfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir], { stdio: 'ignore' });
  t.teardown(async () => {
    execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}
