/**
 * The P2P lower bound on the time for N peers to get F bytes:
 * T >= max(F/u_s, F/d_min, N·F/(u_s + Σu_i)); direct from the source: T >= N·F/u_s.
 * Bandwidths in bytes/s; result in seconds.
 */
export function p2pBound(fileBytes: number, sourceUp: number, downs: readonly number[], ups: readonly number[]): number {
  const n = downs.length;
  const dMin = Math.min(...downs);
  const sumUp = ups.reduce((s, u) => s + u, 0);
  return Math.max(fileBytes / sourceUp, fileBytes / dMin, (n * fileBytes) / (sourceUp + sumUp));
}

export function directBound(fileBytes: number, sourceUp: number, n: number): number {
  return (n * fileBytes) / sourceUp;
}

/**
 * The same bound when each peer wants only part of the blob (lazy loading): the source must send the union once,
 * each peer must receive its own share, and all shares must cross the swarm's total upload.
 */
export function lazyBound(unionBytes: number, wantedBytes: readonly number[], sourceUp: number, downs: readonly number[], ups: readonly number[]): number {
  const perPeer = Math.max(...wantedBytes.map((w, i) => w / downs[i]!));
  const total = wantedBytes.reduce((s, w) => s + w, 0);
  const sumUp = ups.reduce((s, u) => s + u, 0);
  return Math.max(unionBytes / sourceUp, perPeer, total / (sourceUp + sumUp));
}
