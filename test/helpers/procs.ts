/** The real daemon binaries as child processes, for tests that kill, signal or starve them. */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { DAEMON_NODE_FLAGS } from '@damselfly/shared';
import { ROOT, tempDir } from './cluster.js';

interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface Proc {
  child: ChildProcess;
  /** The component's "started" log line. */
  info: Record<string, string>;
  dataDir: string;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code (or signal) and how long after this call it came. */
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
}

/** Extra ways to run a binary: a command prefix (e.g. `prlimit --nofile=256`) and environment. */
export interface ProcOptions {
  env?: NodeJS.ProcessEnv;
  wrap?: string[];
}

function start(t: Teardown, bin: string, args: string[], startedMsg: string, dataDir: string, o: ProcOptions = {}): Promise<Proc> {
  const argv = [...(o.wrap ?? []), process.execPath, ...DAEMON_NODE_FLAGS, join(ROOT, bin), ...args];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    let started = false;
    const onData = (d: Buffer) => {
      out += d;
      // After start only collect: re-reading everything on each chunk would cost a busy daemon's test quadratic time.
      if (started) return;
      for (const line of out.split('\n')) {
        if (!line.includes(startedMsg)) continue;
        try {
          const info = JSON.parse(line) as Record<string, string>;
          if (info.msg !== startedMsg) continue;
          started = true;
          resolve({
            child,
            info,
            dataDir,
            output: () => out,
            exited: async () => {
              const t0 = performance.now();
              const r = await done;
              return { ...r, ms: performance.now() - t0 };
            },
          });
        } catch {}
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void done.then(({ code }) => reject(new Error(`${bin} exited ${code} before starting:\n${out.slice(-1000)}`)));
  });
}

export async function spawnSupernodeProc(t: Teardown, extra: string[] = [], o: ProcOptions = {}): Promise<Proc & { url: string }> {
  const dataDir = await tempDir(t, 'damselfly-snp-');
  const p = await start(
    t,
    'supernode/dist/cli.js',
    ['--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir, '--allowed-origins', '*', '--origin-allow-cidrs', '127.0.0.0/8', '--log-level', 'info', ...extra],
    'supernode:started',
    dataDir,
    o,
  );
  return { ...p, url: p.info.url! };
}

export async function spawnDaemonProc(t: Teardown, supernodes: string[], extra: string[] = [], o: ProcOptions = {}): Promise<Proc & { proxyUrl: string; uploadUrl: string; healthUrl: string }> {
  const dataDir = await tempDir(t, 'damselfly-dfp-');
  const p = await start(
    t,
    'dfdaemon/dist/cli.js',
    ['--supernodes', supernodes.join(','), '--data-dir', dataDir, '--proxy-port', '0', '--upload-host', '127.0.0.1', '--upload-port', '0', '--health-port', '0', '--proxy-hosts', '*', '--log-level', 'info', ...extra],
    'dfdaemon:started',
    dataDir,
    o,
  );
  return { ...p, proxyUrl: p.info.proxy!, uploadUrl: p.info.upload!, healthUrl: p.info.health! };
}
