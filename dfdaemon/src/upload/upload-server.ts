/**
 * Serves verified pieces to other peers: `GET /pieces/:taskId/:n`, bounded by upload slots. With a cluster secret, a
 * piece goes only to a request carrying a grant the supernode issued for exactly that task and piece.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { type BlockReady, FIRST_BLOCK_HEADER, firstBlockParam, GRANT_HEADER, TASK_ID_RE, blockCountFor, describeError, quietLogger, fastifyServerOptions, serveBlocks, verifyGrant, paceAll, type BufferPool, type TokenBucket, type Logger, type Trust } from '@damselfly/shared';
import type { IncomingMessage } from 'node:http';
import type { LocalStore, LocalTask } from '@damselfly/peer';
import type { DaemonMetrics } from '../metrics.js';
import { dfError } from '../errors.js';

/** Longest wait for one block of a relayed piece before the answer is cut (the downloader then goes elsewhere). */
const RELAY_BLOCK_MS = 30_000;
/** How long a request for a piece this node is about to fetch (and relay) waits for that fetch to start. */
const RELAY_START_MS = 2_000;

export function buildUploadServer(c: { store: LocalStore; metrics: DaemonMetrics; log: Logger; slots: number; trust: Trust; pool: BufferPool; limit?: TokenBucket }): FastifyInstance {
  const app = Fastify({ loggerInstance: quietLogger(c.log) as FastifyBaseLogger, ...fastifyServerOptions(c.trust.tls) }) as unknown as FastifyInstance;
  const secret = c.trust.secret;
  // The node's upload limit, shared by every piece it sends.
  const pace = paceAll([c.limit]);
  let active = 0;

  app.setErrorHandler((err, _req, reply) => {
    const e = err as { code?: string; status?: number; statusCode?: number; message: string };
    const status = e.status ?? e.statusCode ?? 500;
    if (status >= 500 && status !== 503) c.log.warn({ err: describeError(err) }, 'upload:failed');
    if (status === 403) c.metrics.uploadRefused.inc();
    void reply.status(status).send({ code: e.code ?? 'INTERNAL', message: e.message });
  });

  app.get('/healthy', async () => ({ ok: true }));

  app.get<{ Params: { taskId: string; n: string }; Querystring: { from?: string } }>('/pieces/:taskId/:n', async (req, reply) => {
    const { taskId } = req.params;
    if (!TASK_ID_RE.test(taskId) || !/^\d{1,9}$/.test(req.params.n)) throw dfError('DF_PIECE_NOT_FOUND', `${taskId}#${req.params.n}`);
    const n = Number(req.params.n);
    if (secret) {
      const g = req.headers[GRANT_HEADER];
      verifyGrant(secret, Array.isArray(g) ? g[0] : g, taskId, n);
    }
    const task = c.store.get(taskId);
    // The supernode pushes a relay's assignment to it and the downloader's to the downloader at the same moment: the
    // downloader may ask before this node has started its own fetch. It gets a moment to start.
    if (task && !task.has(n) && !task.writing(n)) await fetchStarted(task, n, RELAY_START_MS, req.raw);
    // A piece still arriving is relayed block by block as each is verified (the scheduler sends downloaders here
    // only when the supernode has every block's hash, which they check each block against).
    const relaying = task !== undefined && !task.has(n) && task.writing(n);
    if (!task || (!task.has(n) && !relaying)) throw dfError('DF_PIECE_NOT_FOUND', `${taskId}#${n}`);
    // `?from=<block>`: the downloader's reader needs that block first; the body starts there and wraps around.
    const asked = firstBlockParam(req.query.from, blockCountFor(task.range(n).length));
    const first = asked === 'bad' ? 0 : asked;
    // The scheduler keeps peers under their slots; twice that is a misbehaving client, not load.
    if (active >= c.slots * 2) throw dfError('DF_UPLOAD_BUSY', ` (${active})`);
    // The slot and the task stay taken until the body has drained (or the reader is gone), not until it is queued.
    active++;
    const lease = task.lease();
    c.metrics.uploadsActive.set(active);
    const release = () => {
      active--;
      lease();
      c.metrics.uploadsActive.set(active);
    };
    const gone = new AbortController();
    req.raw.once('close', () => gone.abort(dfError('DF_PIECE_NOT_FOUND', 'the reader went away')));
    /** A block of a relayed piece: waited for, but not forever (this node's own download may stall or end). */
    let head: BlockReady | undefined;
    const block = async (b: number): Promise<BlockReady> => {
      if (head && b === first) {
        const ready = head;
        head = undefined;
        return ready;
      }
      // A file a local client holds too is hashed as it is read (see LocalTask.readHandedOut).
      if (!relaying) return task.meta.handedOut ? task.readHandedOut(n, b, { pool: c.pool, signal: gone.signal }) : { sha: '' };
      const stall = new AbortController();
      const timer = setTimeout(() => stall.abort(dfError('DF_PIECE_NOT_FOUND', `${taskId}#${n} block ${b}: not here within ${RELAY_BLOCK_MS} ms`)), RELAY_BLOCK_MS);
      // This node's own fetch of the piece ended without it (failed, cancelled): say so now rather than after the
      // stall limit; the downloader goes elsewhere.
      const ended = (m: number) => void (m === n && !task.writing(n) && stall.abort(dfError('DF_PIECE_NOT_FOUND', `${taskId}#${n}: this node's own fetch of it ended`)));
      task.on('fetch:ended', ended);
      try {
        if (!task.has(n) && !task.writing(n)) ended(n);
        return { sha: '', ...(await task.waitBlock(n, b, { signal: AbortSignal.any([gone.signal, stall.signal]) })) };
      } finally {
        clearTimeout(timer);
        task.off('fetch:ended', ended);
      }
    };
    try {
      const { start, end } = relaying ? task.range(n) : await task.pieceExtent(n);
      // The answer starts once its first block is here: a relay whose own download fails before that says so.
      head = await block(first);
      // Past this point the answer is written by hand from pooled buffers; an error can only cut the connection.
      void reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': end - start + 1, [FIRST_BLOCK_HEADER]: first });
      // The headers go now, not with the first read: the downloader sets up its side while this one reads the disk.
      reply.raw.flushHeaders();
      if (relaying) c.metrics.relayedPieces.inc();
      await task.withFile((fh) => serveBlocks(task.dataPath, start, end - start + 1, reply.raw, { framed: false, firstBlock: first, block, onDisk: () => !relaying && !task.meta.handedOut, pool: c.pool, fh, pace, onBytes: (b) => c.metrics.uploadBytes.inc(b) })).then(
        () => reply.raw.end(),
        () => reply.raw.destroy(),
      );
    } finally {
      // A first block read for this answer and never sent (the answer ended before it) goes back to the pool.
      head?.failed?.();
      release();
    }
  });
  return app;
}

/** Resolves when a fetch of piece `n` starts or the piece lands, after `ms`, or when the request goes away. */
function fetchStarted(task: LocalTask, n: number, ms: number, req: IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      task.off('fetch:started', on);
      task.off('piece:verified', on);
      req.off('close', done);
      resolve();
    };
    const on = (m: number) => void (m === n && done());
    const timer = setTimeout(done, ms);
    task.on('fetch:started', on);
    task.on('piece:verified', on);
    req.once('close', done);
  });
}
