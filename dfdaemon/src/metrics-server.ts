/**
 * `/metrics` for a scraper on the network (Prometheus through the chart's PodMonitor), on its own listener: the health
 * port stays on loopback for the kubelet's probes and nydusd's ping, which speak plain HTTP without credentials. This
 * one speaks the cluster's TLS when it has one and wants the metrics token (`dfctl token --metrics`) when it has a
 * secret: a token that reads metrics and nothing else, since a listener on a node's port proves nothing about who
 * holds it (the operator token, which can ask the supernode for preheats, is refused here).
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { describeError, fastifyServerOptions, quietLogger, verifyMetricsToken, type Logger, type Trust } from '@damselfly/shared';
import type { DaemonMetrics } from './metrics.js';

export function buildMetricsServer(c: { metrics: DaemonMetrics; log: Logger; trust: Trust }): FastifyInstance {
  const app = Fastify({ loggerInstance: quietLogger(c.log) as FastifyBaseLogger, ...fastifyServerOptions(c.trust.tls) }) as unknown as FastifyInstance;
  const secret = c.trust.secret;
  app.setErrorHandler((err, _req, reply) => {
    const e = err as { code?: string; status?: number; statusCode?: number; message: string };
    const status = e.status ?? e.statusCode ?? 500;
    if (status >= 500) c.log.warn({ err: describeError(err) }, 'metrics:failed');
    void reply.status(status).send({ code: e.code ?? 'INTERNAL', message: e.message });
  });
  app.get('/metrics', async (req, reply) => {
    if (secret) verifyMetricsToken(secret, req.headers.authorization);
    void reply.type(c.metrics.registry.contentType);
    return c.metrics.registry.metrics();
  });
  return app;
}
