/**
 * Whether a file or directory with owner `uid` is this process's user's or root's: another owner may read and change
 * it whatever its mode, so what it holds is not this user's alone. Where there are no user ids (Windows), every owner
 * counts as this user.
 */
export function ownedHere(uid: number): boolean {
  const me = process.geteuid?.();
  return me === undefined || uid === me || uid === 0;
}
