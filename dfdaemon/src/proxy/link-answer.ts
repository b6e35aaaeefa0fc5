/**
 * The link answer (see OUTPUT_HEADER): a client on this host that writes the blob to a file (dfget) gets the name of
 * this daemon's own data file once it is complete and verified, and links it as its output, instead of the blob's
 * bytes. The node then writes the blob once instead of twice (its cache, the client's copy), holds it on disk once,
 * and sends nothing over loopback. Until then the answer says how far the download got.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { OUTPUT_HEADER, abortable, isLoopbackHost, type LinkLine } from '@damselfly/shared';
import type { Download, LocalTask } from '@damselfly/peer';
import { dfError } from '../errors.js';

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

/** Answers with LinkLines until the task is complete, then its file; throws (the answer is then cut) if it is not. */
export async function serveLink(dl: Download, res: ServerResponse, signal: AbortSignal): Promise<void> {
  const { task } = dl;
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', [OUTPUT_HEADER]: 'link', 'x-damselfly-task-id': task.info.taskId });
  const line = (l: LinkLine) => res.write(`${JSON.stringify(l)}\n`);
  line({ file: task.dataPath, size: task.info.contentLength });
  const progress = setInterval(() => line({ bytes: verifiedBytes(task) }), PROGRESS_MS);
  try {
    await abortable(dl.done, signal);
  } finally {
    clearInterval(progress);
  }
  // A run that ended without the whole blob (or the blob not matching its digest) hands out nothing: the client is
  // cut and asks for the bytes instead, which says why.
  if (!task.complete) throw dfError('DF_TASK_FAILED', `${task.info.taskId}: the download ended incomplete`);
  const out = await task.handOut();
  line({ done: true, ...out, ...(task.info.digest ? { verified: task.info.digest } : {}) });
  await closedOr(LINK_WAIT_MS, signal);
  res.end();
}

function verifiedBytes(task: LocalTask): number {
  return Math.min(task.info.contentLength, task.presentCount * task.info.pieceSize);
}

/** Resolves when the client closes the answer (it has linked the file: `signal` is the answer's close), or after `ms`. */
function closedOr(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
