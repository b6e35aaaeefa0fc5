/**
 * The dfdaemon proxy on 127.0.0.1:65001. A forward-proxy GET (absolute-form URL, as dfget and nydusd send) becomes a
 * P2P download of that URL; the body streams to the client as pieces are verified. `Range` gets a 206 with
 * `Content-Range`, several ranges a 400, an unsatisfiable one a 416: never a silent 200.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { describeError, parseHttpUrl, parseRange, redactUrl, type Logger } from '@damselfly/shared';
import type { Peer } from '../peer/peer.js';
import type { DaemonMetrics } from '../metrics.js';
import { dfError } from '../errors.js';
import { originHeaders } from './forward-headers.js';
import { streamTask } from './stream-task.js';

export interface ProxyComponents {
  peer: Peer;
  metrics: DaemonMetrics;
  log: Logger;
}

export function buildProxyServer(c: ProxyComponents): Server {
  const server = createServer((req, res) => {
    handle(req, res, c).catch((err) => sendError(res, err, c));
  });
  server.keepAliveTimeout = 30_000;
  return server;
}

async function handle(req: IncomingMessage, res: ServerResponse, c: ProxyComponents): Promise<void> {
  const raw = req.url ?? '/';
  if (!/^https?:\/\//i.test(raw)) {
    if (raw === '/healthy') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      return;
    }
    throw dfError('DF_PROXY_UNSUPPORTED', `${req.method} ${raw.slice(0, 200)} (send an absolute URL, as a forward proxy client does)`);
  }
  if (req.method !== 'GET') throw dfError('DF_PROXY_UNSUPPORTED', `${req.method} (only GET is proxied)`);
  const url = parseHttpUrl(raw);
  const ac = new AbortController();
  res.once('close', () => ac.abort());
  const digest = header(req, 'x-damselfly-digest');
  const dl = await c.peer.download({ url, digest, headers: originHeaders(req.headers) }, { signal: ac.signal });
  const length = dl.task.info.contentLength;
  const range = parseRange(header(req, 'range'), length);
  const start = range?.start ?? 0;
  const end = range?.end ?? length - 1;
  const headers: Record<string, string | number> = {
    'content-type': 'application/octet-stream',
    'content-length': Math.max(0, end - start + 1),
    'accept-ranges': 'bytes',
    'x-damselfly-task-id': dl.task.info.taskId,
  };
  if (dl.task.info.digest) headers['docker-content-digest'] = dl.task.info.digest;
  if (range) headers['content-range'] = `bytes ${start}-${end}/${length}`;
  res.writeHead(range ? 206 : 200, headers);
  c.log.debug({ taskId: dl.task.info.taskId, url: redactUrl(url.href), start, end }, 'proxy:serving');
  await streamTask(dl, res, { start, end, signal: ac.signal });
  res.end();
  c.metrics.proxyRequests.inc({ kind: 'p2p', status: range ? 206 : 200 });
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function sendError(res: ServerResponse, err: unknown, c: ProxyComponents): void {
  const e = err as { code?: string; status?: number; message?: string; wwwAuthenticate?: string };
  if (res.headersSent) {
    // Mid-body: the only honest signal left is to cut the connection (the client sees a short body).
    c.log.warn({ err: describeError(err) }, 'proxy:aborted-mid-body');
    res.destroy();
    return;
  }
  const status = e.status && e.status >= 400 && e.status < 600 ? e.status : 502;
  c.metrics.proxyRequests.inc({ kind: 'error', status });
  if (status >= 500) c.log.warn({ err: describeError(err) }, 'proxy:failed');
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (e.wwwAuthenticate) headers['www-authenticate'] = e.wwwAuthenticate;
  res.writeHead(status, headers).end(JSON.stringify({ code: e.code ?? 'INTERNAL', message: e.message ?? String(err) }) + '\n');
}
