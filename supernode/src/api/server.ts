/** The supernode's HTTP surface: piece API, task API, ws channel, health and metrics. */
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import websocket from '@fastify/websocket';
import {
  AUTH_HEADER,
  GRANT_HEADER,
  NonceCache,
  BLOCK_SIZE,
  BLOCK_SIZE_HEADER,
  FIRST_BLOCK_HEADER,
  FRAMED_CONTENT_TYPE,
  blockCountFor,
  firstBlockParam,
  framedLength,
  serveBlocks,
  TASK_ID_RE,
  WS_PATH,
  describeError,
  originError,
  parseHttpUrl,
  quietLogger,
  sharedError,
  fastifyServerOptions,
  type BlockReady,
  verifyGrant,
  verifyOperatorToken,
  verifyMetricsToken,
  verifySessionProof,
  type Logger,
  type Trust,
  type RateMeter,
} from '@damselfly/shared';
import { snError } from '../errors.js';
import { handlePeerSocket, type ChannelComponents } from './ws-channel.js';
import { Traffic } from './traffic.js';
import type { PreheatJobs } from '../preheat/jobs.js';
import { FORWARDED_HEADER } from '../preheat/siblings.js';
import { dashboardView } from './dashboard.js';
import { DASHBOARD_CSP, DASHBOARD_HTML } from './dashboard-page.js';

export interface ServerComponents extends ChannelComponents {
  log: Logger;
  trust: Trust;
  /** Counts piece bytes as they go out (the uplink's measured rate tunes the supernode's upload slots). */
  served?: RateMeter;
  /** Pieces being served now, each with when it last sent a byte (-Infinity before its first). */
  streams?: Set<{ last: number }>;
  /** Preheat jobs (absent: no preheat API). */
  preheat?: PreheatJobs;
  /** Serve /metrics without the operator token. */
  metricsOpen?: boolean;
}

/** Preheat by image reference: start a job, follow it. Operator API. */
function preheatRoutes(app: FastifyInstance, jobs: PreheatJobs, operator: (req: FastifyRequest) => Promise<void>): void {
  app.post('/api/v1/preheat', { preHandler: operator }, async (req, reply) => {
    const job = jobs.start(req.body);
    void reply.status(202).header('location', `/api/v1/preheat/${job.id}`);
    return job;
  });
  // Behind a Service with several supernodes the job may be another's: it is asked for it (not for a forwarded call).
  app.get<{ Params: { id: string } }>('/api/v1/preheat/:id', { preHandler: operator }, async (req) => jobs.find(req.params.id, { ask: req.headers[FORWARDED_HEADER] === undefined }));
  app.get('/api/v1/preheat', { preHandler: operator }, async () => ({ jobs: jobs.list() }));
}

/** The page and the data behind `/dashboard`. */
function dashboardRoutes(app: FastifyInstance, c: ServerComponents, operator: (req: FastifyRequest) => Promise<void>): void {
  app.get('/dashboard', async (_req, reply) => {
    void reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').header('content-security-policy', DASHBOARD_CSP).header('x-frame-options', 'DENY');
    return DASHBOARD_HTML;
  });
  const traffic = c.traffic ?? new Traffic();
  app.get('/api/v1/dashboard', { preHandler: operator }, async (_req, reply) => {
    void reply.header('cache-control', 'no-store');
    return dashboardView({ scheduler: c.scheduler, store: c.store, sessions: c.sessions, traffic, servedRate: () => c.served?.rate() ?? 0 });
  });
}

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export function buildServer(c: ServerComponents): FastifyInstance {
  const app = Fastify({
    loggerInstance: quietLogger(c.log) as FastifyBaseLogger,
    bodyLimit: 1 << 20,
    ...fastifyServerOptions(c.trust.tls),
  }) as unknown as FastifyInstance;
  const nonces = new NonceCache();
  let serving = 0;
  /** Answers under way per grant (requester, task, piece). */
  const byGrant = new Map<string, number>();
  const secret = c.trust.secret;

  app.setErrorHandler((err, req, reply) => {
    const e = err as { code?: string; status?: number; statusCode?: number; message: string };
    const status = e.status ?? e.statusCode ?? 500;
    if (status >= 500) c.log.warn({ url: req.url.split('?')[0], err: describeError(err) }, 'request:failed');
    if (status === 401 || status === 403) c.metrics.rejected.inc({ why: e.code ?? 'auth' });
    c.metrics.pieceErrors.inc({ code: e.code ?? 'INTERNAL' });
    void reply.status(status).send({ code: e.code ?? 'INTERNAL', message: e.message });
  });

  /** The operator REST API is for operators: `Authorization: Bearer <operator token>` (derived from the cluster secret). */
  const operator = async (req: FastifyRequest) => {
    if (secret) verifyOperatorToken(secret, header(req, 'authorization'));
  };

  app.get('/healthy', async () => ({ ok: true }));
  dashboardRoutes(app, c, operator);
  if (c.preheat) preheatRoutes(app, c.preheat, operator);
  // Metrics name peers, tasks and rates: for the operator's scraper (the metrics token, which can do nothing else) and
  // the operator (their own token), unless the operator opens them.
  const scraper = async (req: FastifyRequest) => {
    if (secret) verifyMetricsToken(secret, header(req, 'authorization'), { operator: true });
  };
  app.get('/metrics', { preHandler: c.metricsOpen ? [] : scraper }, async (_req, reply) => {
    void reply.type(c.metrics.registry.contentType);
    return c.metrics.registry.metrics();
  });

  /** Registers (or looks up) a task over REST. The answer never includes the origin URL. */
  app.post<{ Body: { url?: unknown; digest?: unknown; headers?: unknown } }>('/api/v1/tasks', { preHandler: operator }, async (req) => {
    const b = req.body ?? {};
    if (typeof b.url !== 'string') throw sharedError('BAD_URL', 'body must be {"url": "...", "digest"?: "sha256:...", "headers"?: {...}}');
    const headers: Record<string, string> = {};
    if (typeof b.headers === 'object' && b.headers !== null) for (const [k, v] of Object.entries(b.headers)) if (typeof v === 'string') headers[k] = v;
    const meta = await c.seeder.register(parseHttpUrl(b.url), typeof b.digest === 'string' ? b.digest : undefined, headers);
    return publicView(meta, c.store.seededCount(meta.taskId));
  });

  app.get<{ Params: { taskId: string } }>('/api/v1/tasks/:taskId', { preHandler: operator }, async (req) => {
    const meta = c.store.get(req.params.taskId);
    if (!meta) throw snError('SN_TASK_NOT_FOUND', req.params.taskId);
    return publicView(meta, c.store.seededCount(meta.taskId));
  });

  /** A piece, only to the requester the scheduler granted it to. */
  app.get<{ Params: { taskId: string; n: string }; Querystring: { from?: string } }>('/api/v1/tasks/:taskId/pieces/:n', async (req, reply) => {
    const { taskId } = req.params;
    if (!TASK_ID_RE.test(taskId)) throw snError('SN_TASK_NOT_FOUND', taskId);
    if (!/^\d{1,9}$/.test(req.params.n)) throw snError('SN_BAD_PIECE_NUMBER', JSON.stringify(req.params.n));
    const n = Number(req.params.n);
    const requester = verifyGrant(c.grantKey, header(req, GRANT_HEADER), taskId, n);
    // A downloader building an object without a digest names the version its pieces are: a record made again since
    // (the object changed) must not hand it a piece of another, whose framed hashes would pass it.
    const version = header(req, 'if-match');
    const meta = version === undefined ? undefined : c.store.get(taskId);
    if (meta && !meta.digest && meta.validator !== version) {
      throw originError('ORIGIN_CHANGED', `${taskId} is ${meta.validator ?? 'without ETag'} now, not ${version!.slice(0, 100)}`);
    }
    // `?from=<block>`: the downloader's reader needs that block first; the body starts there and wraps around.
    const asked = firstBlockParam(req.query.from, Number.MAX_SAFE_INTEGER);
    if (asked === 'bad') throw snError('SN_BAD_PIECE_NUMBER', `from=${JSON.stringify(req.query.from).slice(0, 20)}`);
    // The scheduler keeps the supernode under its slots; twice that is someone bypassing it, not load. The cap also
    // keeps the buffer pool from being held by readers that stopped reading.
    if (serving >= c.servingCap) throw snError('SN_BUSY', ` (${serving} pieces being served)`);
    // A grant books one transfer: one answer at a time per grant (two while a retry overlaps the close of the attempt
    // before it). Otherwise one member's single grant, valid for minutes, opens the whole cap of slow reads.
    const grant = `${requester}\0${taskId}\0${n}`;
    const onGrant = byGrant.get(grant) ?? 0;
    if (onGrant >= 2) throw snError('SN_BUSY', ` (this grant is being answered ${onGrant} times already)`);
    byGrant.set(grant, onGrant + 1);
    serving++;
    // A stream counts as using the uplink only once it sends: one waiting on the origin holds no bandwidth.
    const stream = { last: -Infinity };
    c.streams?.add(stream);
    reply.raw.once('close', () => {
      serving--;
      const left = (byGrant.get(grant) ?? 1) - 1;
      if (left > 0) byGrant.set(grant, left);
      else byGrant.delete(grant);
      c.streams?.delete(stream);
    });
    const ac = new AbortController();
    req.raw.once('close', () => ac.abort());
    const source = await c.seeder.openPiece(taskId, n, { signal: ac.signal, requester, first: asked });
    // The task and piece exist now: a block past the piece's end means "from the start".
    const at = c.store.pieceLocation(taskId, n);
    const first = asked < blockCountFor(at.end - at.start + 1) ? asked : 0;
    let piece: { path: string; start: number; end: number; done: () => void };
    let block: (b: number) => Promise<BlockReady>;
    if ('blocks' in source) {
      // Seeded: checked from disk first if this process did not write it.
      const stored = await c.store.servePiece(taskId, n);
      piece = stored;
      block = async (b) => ({ sha: stored.blocks[b]! });
    } else {
      // Still arriving from the origin: each block goes out as soon as it is verified. The answer starts only once
      // the first block is in, so an origin refusal still reaches the downloader as a status, not a cut body.
      // The last block's hash goes out only once the piece is recorded (and the digest check has taken it), so a
      // downloader never completes a piece the supernode then fails to record or finds foreign.
      const { recorded } = source;
      // Readers wait in the store until the seeding fails or they leave.
      const failed = new AbortController();
      recorded.catch((err: unknown) => failed.abort(err));
      const waiting = AbortSignal.any([ac.signal, failed.signal]);
      let head: BlockReady | undefined = await c.store.waitBlock(taskId, n, first, waiting);
      piece = { ...at, done: c.store.hold(taskId) };
      // The last block sent: the one before `first`, wrapping around.
      const count = blockCountFor(at.end - at.start + 1);
      const last = (first + count - 1) % count;
      block = async (b) => {
        // The first block goes out from the bytes that just landed, if it landed while this request waited.
        const ready = b === first && head ? head : await c.store.waitBlock(taskId, n, b, waiting);
        head = undefined;
        if (b === last) await recorded;
        return ready;
      };
    }
    const length = piece.end - piece.start + 1;
    // Written by hand from pooled buffers: memory stays flat however many peers read, or stop reading.
    void reply.hijack();
    try {
      reply.raw.writeHead(200, { 'content-type': FRAMED_CONTENT_TYPE, 'content-length': framedLength(length), [BLOCK_SIZE_HEADER]: BLOCK_SIZE, [FIRST_BLOCK_HEADER]: first });
      // Read through the data file's cached handle (the seeder's writes keep it open), not an open per answer.
      await c.store.withHandle(taskId, (fh) => serveBlocks(piece.path, piece.start, length, reply.raw, { framed: true, firstBlock: first, block, pool: c.pool, fh, signal: ac.signal, onBytes: (b) => (c.metrics.servedBytes.inc(b), c.served?.add(b), (stream.last = performance.now())) }));
      reply.raw.end();
      c.metrics.servedPieces.inc();
    } catch {
      // Cut, never completed: the downloader sees a short body and keeps none of the unfinished block.
      reply.raw.destroy();
    } finally {
      piece.done();
    }
  });

  void app.register(websocket, { options: { maxPayload: 1 << 20 } });
  void app.register(async (scope) => {
    scope.get(
      WS_PATH,
      {
        websocket: true,
        // Membership is checked on the upgrade request: a peer without the secret never gets a socket.
        preValidation: async (req) => {
          if (!secret) return;
          (req as FastifyRequest & { authPeer?: string }).authPeer = verifySessionProof(secret, header(req, AUTH_HEADER), nonces, Date.now(), req.socket.remoteAddress);
        },
      },
      (socket, req) => handlePeerSocket(socket, { authPeer: (req as FastifyRequest & { authPeer?: string }).authPeer, remoteAddress: req.socket.remoteAddress }, c),
    );
  });
  return app;
}

function publicView(meta: { taskId: string; contentLength: number; pieceSize: number; pieceCount: number; digest?: string; public?: boolean; verified?: boolean }, seeded: number) {
  const { taskId, contentLength, pieceSize, pieceCount, digest } = meta;
  return { taskId, contentLength, pieceSize, pieceCount, digest, public: meta.public ?? false, verified: meta.verified ?? false, seeded };
}
