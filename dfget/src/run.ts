/**
 * One dfget run: open the output, fetch through the dfdaemon or as a one-shot peer, verify, commit. Every way it can
 * end yields an Outcome (exit status + one line), and every failing way first removes what it created.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { Scratch } from './scratch.js';
import { FileSink } from './file-sink.js';
import { StdoutSink } from './stdout-sink.js';
import type { Sink } from './sink.js';
import { createProgress, type Progress } from './progress.js';
import { stopConditions } from './stop.js';
import { viaDaemon } from './via-daemon.js';
import { outcomeOf, type Outcome } from './classify.js';
import { STDOUT, type DfgetOptions } from './options.js';
import { sweepLeftovers } from './leftovers.js';
import { dirname } from 'node:path';

export async function run(o: DfgetOptions): Promise<Outcome> {
  const stop = stopConditions(o.timeoutMs);
  const scratch = new Scratch();
  const progress = createProgress(o.progress);
  let sink: Sink | undefined;
  let work: Promise<unknown> | undefined;
  let sweeping: Promise<unknown> | undefined;
  try {
    sink = o.output === STDOUT ? new StdoutSink() : await Promise.race([FileSink.open(o.output, scratch), stop.stopped]);
    // Killed runs' hidden files in the output's directory go, alongside the transfer: they are as big as their blobs,
    // and nothing else would ever remove them. Started once this run's own file exists (it is fresh: never taken).
    if (o.output !== STDOUT) sweeping = sweepLeftovers(dirname(o.output));
    // Raced against the stop conditions: the deadline holds even when something below never settles.
    const transferring = transfer(o, sink, progress, stop.signal, scratch);
    work = transferring;
    const how = await Promise.race([transferring, stop.stopped]);
    progress.stop();
    // Not raced: once the digest matched, the rename is the last step and an interrupt must not split it.
    const got = await sink.commit(o.digest);
    const said = [sink.vouched && 'verified by the dfdaemon', sink instanceof FileSink && sink.linked && 'linked to its cached copy'].filter(Boolean).join(', ');
    const note = how === 'standalone' ? ' (standalone)' : said ? ` (${said})` : '';
    return { status: 0, message: `${o.output === STDOUT ? 'stdout' : o.output} ${sink.bytes} bytes ${got}${note}` };
  } catch (err) {
    progress.stop();
    await sink?.abort();
    await scratch.removeAll();
    if (work) {
      // A transfer stopped from outside winds down in the background: give it a moment to let go of its files, then
      // remove whatever it recreated meanwhile (the peer's cache directory).
      await Promise.race([work.catch(() => {}), delay(300)]);
      await scratch.removeAll();
    }
    // When the run was stopped, that is the cause, whatever error it surfaced as further down.
    const outcome = outcomeOf(stop.signal.aborted ? stop.signal.reason : err);
    const left = sink?.leftover();
    if (outcome.message && left) outcome.message += ` (${left})`;
    return outcome;
  } finally {
    stop.dispose();
    scratch.dispose();
    // The exit would cut it: finished here, but an interrupted run does not wait long for it.
    await Promise.race([sweeping, ...(stop.signal.aborted ? [delay(1000)] : [])]);
  }
}

async function transfer(o: DfgetOptions, sink: Sink, progress: Progress, signal: AbortSignal, scratch: Scratch): Promise<'daemon' | 'standalone'> {
  if (!o.standalone && (await viaDaemon(o, sink, progress, signal))) return 'daemon';
  // Loaded only when needed: the one-shot peer pulls in the whole dfdaemon (fastify, level, ws).
  await (await import('./standalone.js')).standalone(o, sink, progress, signal, scratch);
  return 'standalone';
}
