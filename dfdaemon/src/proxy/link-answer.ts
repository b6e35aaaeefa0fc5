/**
 * The link answer (see OUTPUT_HEADER): a client on this host that writes the blob to a file (dfget) gets the name of
 * this daemon's own data file once it is complete and verified, and links it as its output, instead of the blob's
 * bytes. The node then writes the blob once instead of twice (its cache, the client's copy), holds it on disk once,
 * and sends nothing over loopback. Until then the answer says how far the download got.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { OUTPUT_HEADER, abortable, isLoopbackHost, type LinkLine } from '@damselfly/shared';
import type { Download, HandOut, LocalTask } from '@damselfly/peer';
import { dfError } from '../errors.js';
import { errorAnswer, type ErrorAnswer } from './error-answer.js';

/** How often the verified byte count goes out (it also keeps the client's idle timer from firing on a long pull). */
const PROGRESS_MS = 500;
/** How long the file is held (leased: GC leaves it) after `done` for the client to link it, unless it closes first. */
const LINK_WAIT_MS = 60_000;

/**
 * Whether this request gets a link answer: a whole-blob GET asking for one, from this host (a path means nothing
 * elsewhere, and is not told to other hosts), of a file no local client holds already.
 */
export async function linkable(dl: Download, req: IncomingMessage, range: string | undefined): Promise<boolean> {
  if (req.headers[OUTPUT_HEADER] !== 'link' || range !== undefined) return false;
  // The IPv4-mapped form is what a dual-stack listener reports for an IPv4 client.
  if (!isLoopbackHost((req.socket.remoteAddress ?? '').replace(/^::ffff:/i, ''))) return false;
  // A file that cannot even be looked at (the task just went) is answered the usual way, which says why.
  return dl.task.shareable().catch(() => false);
}

/**
 * Answers with LinkLines until the task is complete, then its file, and resolves with 200. If it cannot be handed
 * out, the last line says why (`onFailed` is told) and whether asking again for the bytes may help, and it resolves
 * with that error's status. Throws (the answer is then cut) only if the client went.
 */
export async function serveLink(dl: Download, res: ServerResponse, { signal, onFailed }: { signal: AbortSignal; onFailed: (err: unknown, answer: ErrorAnswer) => void }): Promise<number> {
  const { task } = dl;
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', [OUTPUT_HEADER]: 'link', 'x-damselfly-task-id': task.info.taskId });
  const line = (l: LinkLine) => res.write(`${JSON.stringify(l)}\n`);
  /** Said rather than cut: the client learns why, as from an error answer, and whether the bytes are worth asking for. */
  const failed = (err: unknown): number => {
    // A client already gone is told nothing, and its leaving is no failure to log.
    if (signal.aborted) throw err;
    const error = errorAnswer(err);
    onFailed(err, error);
    // Only a digest mismatch is sure to come again: asked again, a new run would download the blob to find the same.
    // Anything else may pass: a supernode's refusal (rate limited, the task forgotten), an origin's to the
    // credentials of the client whose run this one joined, a hand-out another client took first.
    line({ error, again: error.code !== 'DIGEST_MISMATCH' });
    res.end();
    return error.status;
  };
  line({ file: task.dataPath, size: task.info.contentLength });
  const progress = setInterval(() => line({ bytes: verifiedBytes(task) }), PROGRESS_MS);
  try {
    await abortable(dl.done, signal);
  } catch (err) {
    return failed(err);
  } finally {
    clearInterval(progress);
  }
  // A run that ended without the whole blob (or the blob not matching its digest) hands out nothing.
  if (!task.complete) return failed(dfError('DF_TASK_FAILED', `${task.info.taskId}: the download ended incomplete`));
  let out: HandOut;
  try {
    // Refused while another client's hand-out is under way or its output is this file (two clients finishing
    // together both found the file shareable when they asked), or once the file changed.
    out = await task.handOut();
  } catch (err) {
    return failed(err);
  }
  line({ done: true, ...out, ...(task.info.digest ? { verified: task.info.digest } : {}) });
  // Handed back when the client closes the answer, which it does once it linked the file or gave up. One that has not
  // after LINK_WAIT_MS may still be linking: the task stays lent (its stamp is kept) for the rest of this process.
  if (await closedOr(LINK_WAIT_MS, { signal })) task.handedBack();
  res.end();
  return 200;
}

function verifiedBytes(task: LocalTask): number {
  return Math.min(task.info.contentLength, task.presentCount * task.info.pieceSize);
}

/**
 * Resolves with true when the client closes the answer (it has linked the file: `signal` is the answer's close), or
 * with false after `ms`.
 */
function closedOr(ms: number, { signal }: { signal: AbortSignal }): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (closed: boolean) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onClose);
      resolve(closed);
    };
    const onClose = () => done(true);
    const timer = setTimeout(() => done(false), ms);
    signal.addEventListener('abort', onClose, { once: true });
  });
}
