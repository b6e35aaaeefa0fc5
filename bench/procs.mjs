// Process helpers for benchmarks: real supernode/dfdaemon/dfget processes, as deployed.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { DAEMON_NODE_FLAGS } from '@damselfly/shared';

export const ROOT = resolve(import.meta.dirname, '..');
// Benchmarks run the cluster as deployed: authenticated (a fresh secret per run, inherited by every child) and with
// the origins it may seed from named (the loopback registry the benchmark starts).
process.env.DAMSELFLY_CLUSTER_SECRET ??= randomBytes(24).toString('base64url');
const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/**
 * Resolves with the first JSON log line of `child` whose `msg` is `msg` (the daemons announce "…:started" with their
 * URLs); rejects, naming `what`, if the child exits first.
 */
export function logLine(child, msg, what) {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onExit = (code) => reject(new Error(`${what} exited ${code} before it logged ${msg}`));
    const onData = (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const j = JSON.parse(line);
          if (j.msg !== msg) continue;
          child.stdout.off('data', onData);
          child.off('exit', onExit);
          return resolve(j);
        } catch {}
      }
    };
    child.stdout.on('data', onData);
    child.once('exit', onExit);
  });
}

/**
 * utime + stime of a live process, in seconds (0 once it is gone); with `mainThread`, of its main thread only (the
 * event loop, without the thread pool's file I/O and worker threads).
 */
export function cpuSeconds(pid, mainThread = false) {
  try {
    const f = readFileSync(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / 100;
  } catch {
    return 0;
  }
}

/** `sha256:<hex>` of a file, read as a stream. */
export async function sha256File(path) {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(c);
  return `sha256:${h.digest('hex')}`;
}

/** Spawns a component and resolves with the URLs its "started" log line announces. */
async function spawnComponent(bin, args, startedMsg) {
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, ...(process.env.BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/prof'] : []), join(ROOT, bin), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  // BENCH_LOGS=<dir>: every component's log lines (JSON, with ms timestamps) go to a file there as well, for tracing a
  // run afterwards (DAMSELFLY_LOG_LEVEL=debug for per-piece events).
  if (process.env.BENCH_LOGS) child.stdout.pipe(createWriteStream(join(process.env.BENCH_LOGS, `${bin.split('/')[0]}-${child.pid}.log`)));
  const info = await logLine(child, startedMsg, bin);
  child.stdout.resume();
  return { child, info, stop: () => new Promise((r) => (child.exitCode !== null ? r() : (child.once('exit', r), child.kill('SIGINT')))) };
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
