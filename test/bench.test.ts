/**
 * Every benchmark, run small, so none of them rots: each spawns the real binaries and a real registry, checks every
 * output's digest itself (a mismatch throws, non-zero exit) and prints its table.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './helpers/cluster.js';

function bench(script: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(ROOT, 'bench', script), ...args], { cwd: ROOT, maxBuffer: 1 << 24, timeout: 240_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

t.test('bench/core.mjs: N dfgets vs N curls, origin bytes', async (t) => {
  const r = await bench('core.mjs', ['--size-mib', '8', '--n', '2']);
  t.equal(r.code, 0, r.stderr.slice(-500));
  t.match(r.stdout, /N=2 8 MiB loopback: direct [\d.]+ s, origin 2\.00x blob \| P2P [\d.]+ s, origin 1\.00x blob/, 'P2P costs the origin the blob once');
});

t.test('bench/range.mjs: Range TTFB through dfdaemon vs direct', async (t) => {
  const r = await bench('range.mjs', ['--size-mib', '32', '--reads', '2']);
  t.equal(r.code, 0, r.stderr.slice(-500));
  t.match(r.stdout, /direct from registry\s+TTFB [\d.]+ ms/);
  // With the registry behind a relay adding 5 ms each way, direct reads included.
  const far = await bench('range.mjs', ['--size-mib', '32', '--reads', '2', '--latency-ms', '5']);
  t.equal(far.code, 0, far.stderr.slice(-500));
  t.match(far.stdout, /registry 5 ms away each way/);
  t.match(far.stdout, /dfdaemon, 2nd node\s+TTFB [\d.]+ ms/);
});

t.test('bench/private-pull.mjs: access-check cost on private pulls vs a public one', async (t) => {
  const r = await bench('private-pull.mjs', ['--size-mib', '2', '--pulls', '2']);
  t.equal(r.code, 0, r.stderr.slice(-500));
  t.match(r.stdout, /\| public registry \(no check\) \| [\d.]+ ms \| [\d.]+ ms \| 1\.00 \| 0\.00 \|/);
  t.match(r.stdout, /\| private, access cached \(default\) \|.*\| 0\.00 \|/, 'cached: no origin request per warm pull');
  t.match(r.stdout, /\| private, checked every pull \|.*\| 1\.00 \|/, 'uncached: one HEAD per pull');
});
