/**
 * The dfdaemon proxy on 127.0.0.1:65001: registry mirror (origin-form `/v2/...`, what containerd and skopeo send)
 * and forward proxy (absolute-form URLs, what nydusd and dfget send). Blob GETs become P2P downloads streamed as
 * pieces are verified; everything else passes straight through. A `Range` read fetches only the pieces covering it
 * and answers 206 with `Content-Range`; several ranges get a 400 and an unsatisfiable one a 416, never a silent 200.
 * If P2P fails before the answer starts, the request goes straight to the upstream (counted), so the client sees the
 * registry's own answer (auth challenges included) rather than ours.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { BLOCK_SIZE, SLOW_CLIENT, VERIFIED_HEADER, type BufferPool, blobDigestOf, checkDigest, describeError, isDigestMismatch, parseRange, rangeHint, redactUrl, taskIdFor, type ByteRange, type HeldBlock, type Logger, type TaskInfo } from '@damselfly/shared';
import { streamTask, type Download, type LocalTask, type Peer } from '@damselfly/peer';
import type { DaemonMetrics } from '../metrics.js';
import type { AccessGuard } from './access-guard.js';
import { originHeaders } from './forward-headers.js';
import { allowedHosts, route, type RoutePolicy } from './route.js';
import { passthrough } from './passthrough.js';
import { linkable, serveLink } from './link-answer.js';
import { errorAnswer } from './error-answer.js';

export interface ProxyComponents {
  peer: Peer;
  metrics: DaemonMetrics;
  log: Logger;
  policy: RoutePolicy & { prefetch: boolean };
  /** For pass-through requests: no redirect following, the client handles those. */
  direct: Dispatcher;
  /** The local cache, for Range reads it can answer without a download (see LocalStore.current). */
  cached: (taskId: string) => Promise<LocalTask | undefined>;
  /** Asks the origin whether this client may read a private blob. */
  access: AccessGuard;
  /** Buffers the answers are read into. */
  pool: BufferPool;
}

export function buildProxyServer(c: ProxyComponents): Server {
  const allowed = allowedHosts(c.policy);
  // Request bodies (pushes passed through) may take long, so no whole-request limit; headers must come in 10 s.
  const server = createServer({ ...SLOW_CLIENT, requestTimeout: 0 }, (req, res) => {
    handle(req, res, c, allowed).catch((err) => sendError(res, err, c));
  });
  // HTTPS tunnelling would hand bytes through unverified and unseen: refuse it plainly instead of dropping the socket.
  // The socket is the client's raw connection: a reset on it (the client gave up) must not become an uncaught error.
  server.on('connect', (_req, socket) => {
    socket.on('error', () => {});
    socket.end('HTTP/1.1 405 Method Not Allowed\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nCONNECT is not supported: send plain-HTTP absolute URLs (nydusd use_http) or use the /v2/ mirror\n');
  });
  // Upgrades (WebSocket and others) are not proxied; without a handler Node would just drop the socket.
  server.on('upgrade', (_req, socket) => {
    socket.on('error', () => {});
    socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
  });
  server.keepAliveTimeout = 30_000;
  return server;
}

async function handle(req: IncomingMessage, res: ServerResponse, c: ProxyComponents, allowed: ReturnType<typeof allowedHosts>): Promise<void> {
  if (req.url === '/healthy') {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    return;
  }
  const r = route(req, c.policy, allowed);
  const ac = new AbortController();
  res.once('close', () => ac.abort());
  /**
   * Before any byte is sent the honest fallback is the upstream itself: the client gets its answer as is (a 401
   * challenge, a 404), or the blob the direct way when P2P cannot deliver it.
   */
  const fallback = async (err: unknown): Promise<void> => {
    if (ac.signal.aborted) throw err;
    // The upstream's raw answer is only honest where the client can check it itself: a registry blob names its
    // digest. A digest asserted for another URL, or bytes already found not to match, end in an error instead.
    if (isDigestMismatch(err) || (explicitDigest !== undefined && blobDigestOf(r.url) === undefined)) throw err;
    // A supernode that cannot verify the origin's certificate is a configuration error the operator must see (give
    // it the CA): going direct would hide it and quietly take the registry's load back.
    if ((err as { remoteCode?: string }).remoteCode === 'ORIGIN_TLS') throw err;
    const status = (err as { status?: number }).status;
    const why = status === 401 || status === 403 ? 'auth' : status === 404 ? 'not_found' : status === 507 ? 'disk_full' : 'p2p_failed';
    c.log.warn({ url: redactUrl(r.url.href), why, err: describeError(err) }, 'proxy:direct-fallback');
    const code = await passthrough(req, res, r.url, c.direct, ac.signal);
    c.metrics.proxyRequests.inc({ kind: `fallback_${why}`, status: code });
  };
  if (r.mode === 'direct') {
    const status = await passthrough(req, res, r.url, c.direct, ac.signal);
    c.metrics.proxyRequests.inc({ kind: 'direct', status });
    return;
  }
  const explicitDigest = header(req, 'x-damselfly-digest');
  const digest = checkDigest(r.url, explicitDigest);
  const rangeHeader = header(req, 'range');
  const taskId = taskIdFor(r.url, digest);
  const clientHeaders = originHeaders(req.headers);

  // A Range read the cache already holds needs no download at all (but the client's access, if the blob is private).
  // Never a task whose bytes were just found not to be its digest's: it is failed at once, removed a moment later.
  const local = await c.cached(taskId);
  // Held until the answer ends: the access check may wait on the origin, and GC must not take a cached task meanwhile
  // (the answer would start and then be cut).
  const leases = local ? [local.lease()] : [];
  try {
    // A task this node holds already: the client's access first, once, whichever way it is answered. A client the
    // origin refuses must not make this node read its disk, not even to re-check pieces (here, or as its run opens).
    if (local) await c.access.authorize(r.url, clientHeaders, local.info, { signal: ac.signal });
    const localRange = local && rangeToHonour(rangeHeader, header(req, 'if-range'), local.info);
    if (local && localRange !== undefined && !isDigestMismatch(local.failure)) {
      // A Range header this path cannot serve (malformed, unsatisfiable) is answered below, by the download: a client
      // the origin refuses has been turned away above, before it learnt anything, not even the blob's size.
      const range = tryParseRange(localRange, local.info.contentLength);
      const covering = range ? piecesOf(range, local.info.pieceSize) : [];
      // The whole blob as a Range read is served from here only once it matched its digest: no download is behind
      // this answer to hold its last block back until then.
      const whole = range !== undefined && range.start === 0 && range.end === local.info.contentLength - 1;
      if (range && covering.every((n) => local.has(n)) && (!whole || local.complete) && (await local.recheck(covering)).length === 0) {
        writeHead(res, local, range);
        // No download behind this answer: a piece dropped meanwhile (another reader found it bad) ends it with an
        // error rather than a wait for a fetch nobody makes.
        await streamTask({ task: local, done: Promise.resolve(local), want: () => false }, res, { ...range, signal: ac.signal, pool: c.pool });
        res.end();
        c.metrics.proxyRequests.inc({ kind: 'cache', status: 206 });
        return;
      }
    }
    let dl: Download;
    try {
      // Opened without fetching anything: a client the origin refuses must not make this node download a byte.
      // A new run states the reader's pieces with its registration (one supernode round trip before the first block,
      // not two); a Range header honoured only if the object did not change (If-Range) is left to the usual way.
      const read = header(req, 'if-range') === undefined ? rangeHint(rangeHeader) : undefined;
      dl = await c.peer.download({ url: r.url, digest, headers: clientHeaders }, { signal: ac.signal, whole: false, read });
    } catch (err) {
      return await fallback(err);
    }
    leases.push(dl.task.lease());
    await serveDownload(dl);
  } finally {
    for (const release of leases) release();
  }

  async function serveDownload(dl: Download): Promise<void> {
    // Cached, shared or fresh, a private blob reaches only a client the origin would give it to (asked once: not again
    // for the task checked above, which an access cache of 0 s would otherwise make a second origin request).
    if (dl.task !== local) await c.access.authorize(r.url, clientHeaders, dl.task.info, { signal: ac.signal });
    // What this client gets of the task: worked out again for a new run's task, which may be another version now.
    const plan = (info: TaskInfo) => {
      const range = parseRange(rangeToHonour(rangeHeader, header(req, 'if-range'), info), info.contentLength);
      return { range, wanted: range ? piecesOf(range, info.pieceSize) : ('all' as const) };
    };
    let { range, wanted } = plan(dl.task.info);
    if (!dl.want(wanted, range?.start)) {
      // That run was already finishing: start another for what this client wants.
      try {
        dl = await c.peer.download({ url: r.url, digest, headers: clientHeaders }, { signal: ac.signal, whole: wanted === 'all', read: range });
      } catch (err) {
        return fallback(err);
      }
      leases.push(dl.task.lease());
      ({ range, wanted } = plan(dl.task.info));
      dl.want(wanted, range?.start);
    }
    const length = dl.task.info.contentLength;
    if (range && (c.policy.prefetch || header(req, 'x-dragonfly-prefetch') === 'true')) dl.want('all');
    const start = range?.start ?? 0;
    const end = range?.end ?? length - 1;
    // The answer starts once its first block is verified, so a P2P failure before that still falls back to the upstream
    // (a cut connection is only for failures after bytes went out).
    let head: HeldBlock | undefined;
    try {
      head = await firstBlockReady(dl, start, end, ac.signal);
    } catch (err) {
      return fallback(err);
    }
    if (!range && (await linkable(dl, req, rangeHeader))) {
      head?.release();
      c.log.debug({ taskId: dl.task.info.taskId, url: redactUrl(r.url.href) }, 'proxy:linking');
      let status: number;
      try {
        status = await serveLink(dl, res, {
          signal: ac.signal,
          onFailed: (err, { status }) => {
            if (status >= 500) c.log.warn({ taskId: dl.task.info.taskId, err: describeError(err) }, 'proxy:link-failed');
          },
        });
      } catch (err) {
        // The client closed the answer: it cannot link the file (another filesystem, another owner) and asks for the
        // bytes instead, which is no failure to log.
        if (ac.signal.aborted) return;
        throw err;
      }
      c.metrics.proxyRequests.inc({ kind: 'link', status });
      return;
    }
    writeHead(res, dl.task, range);
    c.log.debug({ taskId: dl.task.info.taskId, url: redactUrl(r.url.href), range }, 'proxy:serving');
    await streamTask(dl, res, { start, end, signal: ac.signal, pool: c.pool, head });
    res.end();
    c.metrics.proxyRequests.inc({ kind: 'p2p', status: range ? 206 : 200 });
  }
}

/**
 * The Range header to honour. An object without a digest may change at its origin: a client's `If-Range` names the
 * version its earlier bytes were, and only when that is this task's version (strong comparison, RFC 9110 13.1.5: a
 * date or a weak tag never matches) does it get a part; otherwise the whole object, whose ETag says which it is. A
 * blob with a digest is the same bytes under its URL whatever the client compares it with: its Range always holds.
 */
function rangeToHonour(range: string | undefined, ifRange: string | undefined, info: TaskInfo): string | undefined {
  if (range === undefined || ifRange === undefined || info.digest !== undefined) return range;
  return info.validator !== undefined && ifRange === info.validator ? range : undefined;
}

/** The range asked for, or undefined when the header is malformed or cannot be satisfied. */
function tryParseRange(header: string, length: number): ByteRange | undefined {
  try {
    return parseRange(header, length);
  } catch {
    return undefined;
  }
}

/**
 * Resolves when the first block of [start, end] may be sent (for a whole blob of one block: once it is verified),
 * with its bytes when it landed during the wait.
 */
async function firstBlockReady(dl: Download, start: number, end: number, signal: AbortSignal): Promise<HeldBlock | undefined> {
  const { pieceSize, contentLength } = dl.task.info;
  if (contentLength === 0 || end < start) return undefined;
  const n = Math.floor(start / pieceSize);
  const data = await dl.task.waitBlock(n, Math.floor((start - n * pieceSize) / BLOCK_SIZE), { signal });
  if (start === 0 && end === contentLength - 1 && contentLength <= BLOCK_SIZE) await dl.done;
  return data;
}

function piecesOf(range: ByteRange, pieceSize: number): number[] {
  const out: number[] = [];
  for (let n = Math.floor(range.start / pieceSize); n <= Math.floor(range.end / pieceSize); n++) out.push(n);
  return out;
}

function writeHead(res: ServerResponse, task: LocalTask, range: ByteRange | undefined): void {
  const length = task.info.contentLength;
  const start = range?.start ?? 0;
  const end = range?.end ?? length - 1;
  const headers: Record<string, string | number> = {
    'content-type': 'application/octet-stream',
    'content-length': Math.max(0, end - start + 1),
    'accept-ranges': 'bytes',
    'x-damselfly-task-id': task.info.taskId,
  };
  if (task.info.digest) headers['docker-content-digest'] = task.info.digest;
  // The version of an object without a digest, for the client's If-Range when it resumes.
  else if (task.info.validator) headers.etag = task.info.validator;
  // The whole blob goes out with its last block held until it matched the digest (see streamTask).
  if (task.info.digest && !range) headers[VERIFIED_HEADER] = task.info.digest;
  if (range) headers['content-range'] = `bytes ${start}-${end}/${length}`;
  res.writeHead(range ? 206 : 200, headers);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function sendError(res: ServerResponse, err: unknown, c: ProxyComponents): void {
  const e = err as { headers?: Record<string, string> };
  if (res.headersSent) {
    // Mid-body: the only honest signal left is to cut the connection (the client sees a short body).
    c.log.warn({ err: describeError(err) }, 'proxy:aborted-mid-body');
    res.destroy();
    return;
  }
  const { status, code, message } = errorAnswer(err);
  c.metrics.proxyRequests.inc({ kind: 'error', status });
  if (status >= 500) c.log.warn({ err: describeError(err) }, 'proxy:failed');
  // Headers the answer must carry (a 416's Content-Range, the origin's auth challenge) travel on the error as data.
  const headers: Record<string, string> = { ...e.headers, 'content-type': 'application/json' };
  res.writeHead(status, headers).end(JSON.stringify({ code, message }) + '\n');
}
