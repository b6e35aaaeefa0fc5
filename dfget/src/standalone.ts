/**
 * One-shot peer in this process, for nodes without a dfdaemon: asks the supernodes for pieces (uploading nothing
 * itself), or goes to the origin directly when none answers. Its cache lives in a temporary directory removed at the end.
 */
import { mkdtemp } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createLogger, createOriginDispatcher, createRegistry, commonSchema, BufferPool, BulkClient } from '@damselfly/shared';
import { LocalStore, Peer, SupernodePool, clusterTls, createPeerMetrics, engineOptions, streamTask } from '@damselfly/peer';
import type { DfgetOptions } from './options.js';
import type { Sink } from './sink.js';
import type { Progress } from './progress.js';
import type { Scratch } from './scratch.js';
import { dfgetError } from './errors.js';
import { hasCode } from './classify.js';

export async function standalone(o: DfgetOptions, sink: Sink, progress: Progress, signal: AbortSignal, scratch: Scratch): Promise<void> {
  // Registered as it is made: a run that times out while the peer is stuck still removes it.
  const dir = await scratch.during(mkdtemp(join(tmpdir(), 'dfget-')).then((d) => (scratch.add(d), d))).catch((err: unknown) => {
    throw cacheError(err);
  });
  // On stderr: stdout may be the blob itself (`-O -`), where a log line would be a corrupt byte.
  const log = createLogger('dfget', process.env.DAMSELFLY_LOG_LEVEL ?? 'silent', process.stderr);
  const store = new LocalStore(dir);
  const dispatcher = createOriginDispatcher();
  const cluster = new BulkClient({ tls: clusterTls(o.trust) });
  const pool = new SupernodePool(o.supernodes, { peerId: `dfget-${hostname()}-${process.pid}` }, log, o.trust);
  // The engine's defaults, as a node has them: a one-shot peer routes around slow sources and refuses absurd sizes the
  // same way (an absurd size is not a sparse file here either).
  const opts = engineOptions({}, Number(commonSchema.maxBlobSize!.default));
  const peer = new Peer(opts, { store, pool, dispatcher, cluster, metrics: createPeerMetrics(createRegistry('dfget', false)), log });
  try {
    await store.start().catch((err: unknown) => {
      throw cacheError(err);
    });
    const dl = await peer.download({ url: o.url, digest: o.digest, headers: o.headers }, { signal });
    progress.start(dl.task.info.contentLength);
    const out = new Writable({
      highWaterMark: 1 << 20,
      write(chunk: Buffer, _enc, cb) {
        progress.add(chunk.length);
        sink.write(chunk).then(() => cb(), cb);
      },
    });
    // The failure is the sink's, kept there; streamTask sees it as the stream ending.
    out.on('error', () => {});
    try {
      // The sink resolves a write only once it is done, so the pooled buffers are never reused under it.
      await streamTask(dl, out, { start: 0, end: dl.task.info.contentLength - 1, signal, pool: new BufferPool(1 << 20, 2) });
    } catch (err) {
      // A failing download fails its reader too, often first and by a side effect (its file removed: ENOENT). The
      // download's own error is the cause to report; it comes within moments when there is one.
      if (sink.failure || signal.aborted) throw err;
      throw (await Promise.race([dl.done.then(() => undefined, (cause: unknown) => cause), delay(1000)])) ?? err;
    }
    await dl.done;
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    // streamTask reports a failed write as "client went away": the sink knows the real cause (the user's disk).
    if (sink.failure) throw sink.failure;
    // This process's own cache is not the output: a transfer failure (3), said where so the user can move TMPDIR.
    if (hasCode(err, 'DF_DISK_FULL', 'PIECE_DISK_FULL')) throw dfgetError('DFGET_HTTP', `dfget's cache in ${tmpdir()} is full (set TMPDIR elsewhere): ${(err as Error).message}`, err);
    throw err;
  } finally {
    const wind = async () => {
      await peer.stop();
      pool.close();
      await store.stop().catch(() => {});
      await dispatcher.close().catch(() => {});
      await cluster.close().catch(() => {});
    };
    // Stopped from outside (timeout, signal), the process is about to exit: waiting for the peer to wind down (an
    // origin that ignores the abort) would only hold the exit up. Its cache directory goes either way.
    if (signal.aborted) void wind().catch(() => {});
    else await wind();
    await scratch.release(dir);
  }
}

/**
 * This process's cache could not be made or opened (TMPDIR missing, read-only, full): a transfer failure (3) naming
 * TMPDIR, like a cache that fills up, rather than an unclassified error.
 */
function cacheError(err: unknown): unknown {
  if (!hasCode(err, 'ENOENT', 'EACCES', 'EPERM', 'EROFS', 'ENOSPC', 'ENOTDIR')) return err;
  return dfgetError('DFGET_HTTP', `dfget's cache in ${tmpdir()} cannot be made (set TMPDIR elsewhere): ${(err as Error).message}`, err);
}
