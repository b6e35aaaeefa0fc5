// Process helpers for benchmarks: real supernode/dfdaemon/dfget processes, as deployed.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';

export const ROOT = resolve(import.meta.dirname, '..');
// Benchmarks run the cluster as deployed: authenticated (a fresh secret per run, inherited by every child) and with
// the origins it may seed from named (the loopback registry the benchmark starts).
process.env.DAMSELFLY_CLUSTER_SECRET ??= randomBytes(24).toString('base64url');
const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** Spawns a component and resolves with the URLs its "started" log line announces. */
function spawnComponent(bin, args, startedMsg) {
  return new Promise((resolveP, reject) => {
    const child = spawn(process.execPath, [...(process.env.BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/prof'] : []), join(ROOT, bin), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.add(child);
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      for (const line of buf.split('\n')) {
        try {
          const j = JSON.parse(line);
          if (j.msg === startedMsg) {
            child.stdout.removeAllListeners('data');
            child.stdout.resume();
            resolveP({ child, info: j, stop: () => new Promise((r) => (child.exitCode !== null ? r() : (child.once('exit', r), child.kill('SIGINT')))) });
          }
        } catch {}
      }
    });
    child.once('exit', (code) => reject(new Error(`${bin} exited ${code}`)));
  });
}

export async function spawnSupernode(extra = []) {
  const dir = await mkdtemp(join(tmpdir(), 'bench-sn-'));
  const sn = await spawnComponent(
    'supernode/dist/cli.js',
    ['--host', '127.0.0.1', '--port', '0', '--data-dir', dir, '--allowed-origins', '*', '--origin-allow-cidrs', '127.0.0.0/8', ...extra],
    'supernode:started',
  );
  return { ...sn, url: sn.info.url, dir };
}

export async function spawnDaemon(supernodeUrl, i, extra = []) {
  const dir = await mkdtemp(join(tmpdir(), 'bench-df-'));
  const d = await spawnComponent(
    'dfdaemon/dist/cli.js',
    ['--supernodes', supernodeUrl, '--data-dir', dir, '--proxy-port', '0', '--upload-host', '127.0.0.1', '--upload-port', '0', '--health-port', '0', '--peer-id', `bench-${i}`, ...extra],
    'dfdaemon:started',
  );
  return { ...d, proxyUrl: d.info.proxy, dir };
}

export function run(cmd, args) {
  return new Promise((resolveP) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => resolveP({ code, err }));
  });
}
