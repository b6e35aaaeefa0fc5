/**
 * One-shot peer in this process, for nodes without a dfdaemon: asks the supernodes for pieces (uploading nothing
 * itself), or goes to the origin directly when none answers. Its cache lives in a temporary directory removed at the
 * end: beside -O <file>, whose content its data file then becomes (moved, not copied: the blob is written once, and no
 * second copy sits in TMPDIR, which is often memory); for -O -, which is streamed from it, in TMPDIR when it is set
 * and /var/tmp otherwise (see streamCacheParent).
 */
import { access, constants, mkdtemp } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { DISK_FULL_CODES, aborted, clusterTls, createLogger, createOriginDispatcher, createRegistry, commonSchema, BufferPool, BulkClient } from '@damselfly/shared';
import { LocalStore, Peer, SupernodePool, createPeerMetrics, engineOptions, streamTask } from '@damselfly/peer';
import type { DfgetOptions } from './options.js';
import type { Sink } from './sink.js';
import { FileSink } from './file-sink.js';
import type { Progress } from './progress.js';
import type { Scratch } from './scratch.js';
import { CACHE_DIR_PREFIX } from './leftovers.js';
import { dfgetError } from './errors.js';
import { hasCode } from './classify.js';

export async function standalone(o: DfgetOptions, sink: Sink, progress: Progress, signal: AbortSignal, scratch: Scratch): Promise<void> {
  const beside = sink instanceof FileSink ? sink : undefined;
  const parent = beside ? dirname(beside.tmp) : await streamCacheParent();
  const cacheError = (err: unknown) => (beside ? besideError(beside, err) : tmpdirError(parent, err));
  // Registered as it is made: a run that times out while the peer is stuck still removes it.
  const dir = await scratch.during(() => mkdtemp(join(parent, beside ? CACHE_DIR_PREFIX : 'dfget-')).then((d) => (scratch.add(d), d))).catch((err: unknown) => {
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
    if (beside) {
      const onPiece = (n: number) => progress.add(dl.task.range(n).length);
      dl.task.on('piece:verified', onPiece);
      try {
        // Stopped from outside (timeout, signal), the run is over at once: the file is never moved into a place the
        // clean-up has already been through.
        await Promise.race([dl.done, aborted(signal)]);
      } finally {
        dl.task.off('piece:verified', onPiece);
      }
      signal.throwIfAborted();
      if (!dl.task.complete) throw dfgetError('DFGET_HTTP', `the download of ${dl.task.info.taskId} ended incomplete`);
      // The engine checked the whole blob against its digest (the supernode's word on its own copy, or here): that
      // is the sink's too, unless --verify asks for one more pass. An empty blob has no data file to take.
      const { contentLength, digest } = dl.task.info;
      if (contentLength > 0) await beside.adopt(store.dataPath(dl.task.info.taskId), contentLength, o.verify ? undefined : (digest ?? o.digest));
      return;
    }
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
    if (hasCode(err, ...FULL)) throw cacheError(err);
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

/** A cache directory that could not be made or opened, and one that filled up. */
const CANNOT_MAKE = ['ENOENT', 'EACCES', 'EPERM', 'EROFS', 'ENOTDIR'];
const FULL = DISK_FULL_CODES;

/**
 * The cache beside the output could not be made or filled: the output's own directory or disk (exit 5), said as
 * writing the output would have said it.
 */
function besideError(sink: FileSink, err: unknown): unknown {
  if (!hasCode(err, ...CANNOT_MAKE, ...FULL)) return err;
  const full = hasCode(err, ...FULL);
  return sink.failure ?? dfgetError('DFGET_OUTPUT', `${sink.output}: ${full ? 'no space left on device' : (err as Error).message}`, err);
}

/**
 * Where -O - keeps its one-shot cache, a second copy of the blob: TMPDIR when the user set it; otherwise /var/tmp,
 * which is kept on disk across reboots by convention (FHS), rather than /tmp, which is often memory (tmpfs): a 10 GiB
 * blob piped into `tar x` must not take 10 GiB of RAM. A system without a writable /var/tmp gets the usual temp dir.
 */
async function streamCacheParent(): Promise<string> {
  if (process.env.TMPDIR) return tmpdir();
  return access(VAR_TMP, constants.W_OK).then(
    () => VAR_TMP,
    () => tmpdir(),
  );
}

const VAR_TMP = '/var/tmp';

/**
 * The cache for -O - could not be made, opened or filled (its directory missing, read-only, full): a transfer failure
 * (3) naming the directory so the user can move it with TMPDIR, rather than an unclassified error.
 */
function tmpdirError(parent: string, err: unknown): unknown {
  if (!hasCode(err, ...CANNOT_MAKE, ...FULL)) return err;
  const full = hasCode(err, ...FULL);
  return dfgetError('DFGET_HTTP', `dfget's cache in ${parent} ${full ? 'is full' : 'cannot be made'} (set TMPDIR elsewhere): ${(err as Error).message}`, err);
}
