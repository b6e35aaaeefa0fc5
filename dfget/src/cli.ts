#!/usr/bin/env node
/**
 * dfget <url> -O <file>: fetch a blob through the local dfdaemon (P2P), or as a one-shot peer when none runs.
 * Exit 0 only when <file> holds the whole (digest-verified, when a digest is known) blob; otherwise a message on
 * stderr, a non-zero code, and no partial <file>.
 */
import { Command } from 'commander';
import { blobDigestOf, describeError } from '@damselfly/shared';
import { validateOptions } from './options.js';
import { FileSink } from './sink.js';
import { createProgress } from './progress.js';
import { viaDaemon } from './via-daemon.js';

const collect = (v: string, prev: string[]) => [...prev, v];
const program = new Command('dfget')
  .description('Download a URL through the Damselfly P2P network')
  .argument('<url>', 'http(s) URL to fetch')
  .requiredOption('-O, --output <file>', 'where to write the file')
  .option('--digest <digest>', 'expected sha256:<hex> of the whole file (registry blob URLs carry their own)')
  .option('-H, --header <header>', "header for the origin, 'Name: value' (repeatable)", collect, [])
  .option('--supernode <url>', 'supernode to use when no dfdaemon runs (repeatable)', collect, [])
  .option('--daemon <url>', 'local dfdaemon proxy', 'http://127.0.0.1:65001')
  .option('--standalone', 'do not use the local dfdaemon')
  .option('--no-progress', 'no progress bar')
  .option('--timeout <seconds>', 'give up after this long (0 = never)')
  .option('--cluster-secret-file <file>', 'cluster secret, for --supernode as a one-shot peer [$DAMSELFLY_CLUSTER_SECRET_FILE, $DAMSELFLY_CLUSTER_SECRET]')
  .showHelpAfterError();
program.parse();
const raw = program.opts<{ output: string; digest?: string; header: string[]; supernode: string[]; daemon: string; standalone?: boolean; progress: boolean; timeout?: string; clusterSecretFile?: string }>();

async function main(): Promise<number> {
  const o = validateOptions({ url: program.args[0], ...raw });
  const digest = o.digest ?? blobDigestOf(o.url);
  const ac = new AbortController();
  const stop = () => ac.abort(new Error('interrupted'));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const signal = o.timeoutMs ? AbortSignal.any([ac.signal, AbortSignal.timeout(o.timeoutMs)]) : ac.signal;
  const sink = new FileSink(o.output);
  const progress = createProgress(o.progress);
  try {
    const viaDaemonOk = !o.standalone && (await viaDaemon({ ...o, digest }, sink, progress, signal));
    // Loaded only when needed: the one-shot peer pulls in the whole dfdaemon (fastify, level, ws).
    if (!viaDaemonOk) await (await import('./standalone.js')).standalone({ ...o, digest }, sink, progress, signal);
    progress.stop();
    const got = await sink.commit(digest);
    process.stderr.write(`dfget: ${o.output} ${sink.bytes} bytes ${got}${viaDaemonOk ? '' : ' (standalone)'}\n`);
    return 0;
  } catch (err) {
    progress.stop();
    await sink.abort();
    throw err;
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const status = (err as { code?: string; status?: number }).code?.startsWith('DFGET_') ? (err as { status: number }).status : 1;
    process.stderr.write(`dfget: ${describeError(err).replace(/^DFGET_\w+: /, '')}\n`);
    process.exit(status);
  },
);
