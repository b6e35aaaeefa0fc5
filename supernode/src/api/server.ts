/** The supernode's HTTP surface: piece API, task API, ws channel, health and metrics. */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import websocket from '@fastify/websocket';
import { PIECE_SHA_HEADER, TASK_ID_RE, WS_PATH, describeError, parseHttpUrl, quietLogger, sharedError, type Logger } from '@damselfly/shared';
import { snError } from '../errors.js';
import { handlePeerSocket, type ChannelComponents } from './ws-channel.js';

export function buildServer(c: ChannelComponents & { log: Logger }): FastifyInstance {
  const app = Fastify({ loggerInstance: quietLogger(c.log) as FastifyBaseLogger, bodyLimit: 1 << 20 });

  app.setErrorHandler((err, req, reply) => {
    const e = err as { code?: string; status?: number; statusCode?: number; message: string };
    const status = e.status ?? e.statusCode ?? 500;
    if (status >= 500) c.log.warn({ url: req.url, err: describeError(err) }, 'request:failed');
    c.metrics.pieceErrors.inc({ code: e.code ?? 'INTERNAL' });
    void reply.status(status).send({ code: e.code ?? 'INTERNAL', message: e.message });
  });

  app.get('/healthy', async () => ({ ok: true }));
  app.get('/metrics', async (_req, reply) => {
    void reply.type(c.metrics.registry.contentType);
    return c.metrics.registry.metrics();
  });

  /** Registers (or looks up) a task over REST: lets operators preheat a blob. */
  app.post<{ Body: { url?: unknown; digest?: unknown; headers?: unknown } }>('/api/v1/tasks', async (req) => {
    const b = req.body ?? {};
    if (typeof b.url !== 'string') throw sharedError('BAD_URL', 'body must be {"url": "...", "digest"?: "sha256:...", "headers"?: {...}}');
    const headers = typeof b.headers === 'object' && b.headers !== null ? (b.headers as Record<string, string>) : {};
    const meta = await c.seeder.register(parseHttpUrl(b.url), typeof b.digest === 'string' ? b.digest : undefined, headers);
    return { ...meta, seeded: c.store.seededCount(meta.taskId) };
  });

  app.get<{ Params: { taskId: string } }>('/api/v1/tasks/:taskId', async (req) => {
    const meta = c.store.get(req.params.taskId);
    if (!meta) throw snError('SN_TASK_NOT_FOUND', req.params.taskId);
    return { ...meta, url: undefined, seeded: c.store.seededCount(meta.taskId) };
  });

  app.get<{ Params: { taskId: string; n: string } }>('/api/v1/tasks/:taskId/pieces/:n', async (req, reply) => {
    const { taskId } = req.params;
    if (!TASK_ID_RE.test(taskId)) throw snError('SN_TASK_NOT_FOUND', taskId);
    if (!/^\d{1,9}$/.test(req.params.n)) throw snError('SN_BAD_PIECE_NUMBER', JSON.stringify(req.params.n));
    const n = Number(req.params.n);
    const ac = new AbortController();
    req.raw.once('close', () => ac.abort());
    const sha = await c.seeder.ensurePiece(taskId, n, { signal: ac.signal });
    const data = await c.store.readPiece(taskId, n);
    c.metrics.servedPieces.inc();
    c.metrics.servedBytes.inc(data.length);
    void reply.header(PIECE_SHA_HEADER, sha).header('content-type', 'application/octet-stream');
    return reply.send(data);
  });

  void app.register(websocket, { options: { maxPayload: 4 << 20 } });
  void app.register(async (scope) => {
    scope.get(WS_PATH, { websocket: true }, (socket) => handlePeerSocket(socket, c));
  });
  return app;
}
