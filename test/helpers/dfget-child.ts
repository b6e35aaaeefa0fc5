/** Runs the real dfget CLI as a child the test can signal, with stdout kept as bytes and the run timed. */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './cluster.js';

export const DFGET = join(ROOT, 'dfget/dist/cli.js');

export interface DfgetResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  /** Wall time from spawn to exit. */
  ms: number;
}

export function spawnDfget(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): { child: ChildProcess; done: Promise<DfgetResult> } {
  const t0 = performance.now();
  const child = spawn(process.execPath, [DFGET, ...args], { env: { ...process.env, ...opts.env }, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => out.push(d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<DfgetResult>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr, ms: performance.now() - t0 })),
  );
  return { child, done };
}

export function runDfget(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<DfgetResult> {
  return spawnDfget(args, opts).done;
}
