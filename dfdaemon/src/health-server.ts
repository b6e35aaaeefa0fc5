/** `/server/ping` (nydusd's ping_url), `/healthy` and `/metrics` on their own port. */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { fastifyServerOptions, quietLogger, type Logger } from '@damselfly/shared';
import type { DaemonMetrics } from './metrics.js';

export function buildHealthServer(c: { metrics: DaemonMetrics; log: Logger }): FastifyInstance {
  const app = Fastify({ loggerInstance: quietLogger(c.log) as FastifyBaseLogger, ...fastifyServerOptions(undefined) });
  app.get('/server/ping', async () => ({ ok: true }));
  app.get('/healthy', async () => ({ ok: true }));
  app.get('/metrics', async (_req, reply) => {
    void reply.type(c.metrics.registry.contentType);
    return c.metrics.registry.metrics();
  });
  return app;
}
