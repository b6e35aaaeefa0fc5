/**
 * One-shot peer in this process, for nodes without a dfdaemon: asks the supernodes for pieces (uploading nothing
 * itself), or goes to the origin directly when none answers. Its cache lives in a temporary directory removed at the end.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Agent } from 'undici';
import { createLogger, createOriginDispatcher } from '@damselfly/shared';
import { LocalStore, Peer, SupernodePool, clusterTls, createDaemonMetrics, streamTask } from '@damselfly/dfdaemon';
import type { DfgetOptions } from './options.js';
import type { FileSink } from './sink.js';
import type { Progress } from './progress.js';

export async function standalone(o: DfgetOptions, sink: FileSink, progress: Progress, signal: AbortSignal): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'dfget-'));
  const log = createLogger('dfget', process.env.DAMSELFLY_LOG_LEVEL ?? 'silent');
  const store = new LocalStore(dir);
  const dispatcher = createOriginDispatcher();
  const cluster = new Agent({ connect: clusterTls(o.trust) });
  const pool = new SupernodePool(o.supernodes, { peerId: `dfget-${hostname()}-${process.pid}` }, log, o.trust);
  const peer = new Peer({ parallelPieces: 8, pieceTimeoutMs: 30_000, backSource: true }, { store, pool, dispatcher, cluster, metrics: createDaemonMetrics(), log });
  await store.start();
  try {
    const dl = await peer.download({ url: o.url, digest: o.digest, headers: o.headers }, { signal });
    progress.start(dl.task.info.contentLength);
    const out = new Writable({
      highWaterMark: 1 << 20,
      write(chunk: Buffer, _enc, cb) {
        sink.observe(chunk);
        progress.add(chunk.length);
        if (sink.stream.write(chunk)) cb();
        else sink.stream.once('drain', () => cb());
      },
    });
    await streamTask(dl, out, { start: 0, end: dl.task.info.contentLength - 1, signal });
    await dl.done;
  } finally {
    await peer.stop();
    pool.close();
    await store.stop().catch(() => {});
    await dispatcher.close().catch(() => {});
    await cluster.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}
