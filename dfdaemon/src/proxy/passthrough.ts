/**
 * Straight-through forwarding to the upstream: method, headers (minus hop-by-hop) and body unchanged, redirects
 * and auth challenges handed back to the client as they are.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { request, type Dispatcher } from 'undici';
import { describeError, redactUrl } from '@damselfly/shared';
import { dfError } from '../errors.js';

/**
 * Hop-by-hop headers. `expect` too: Node's server has already answered a client's `Expect: 100-continue` itself, and
 * undici refuses to send one.
 */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'expect']);

/**
 * Hop-by-hop headers (the fixed ones, and any a `Connection` header names) and Damselfly's own go neither way: an
 * upstream must not be able to answer with a header the dfdaemon sets itself (x-damselfly-verified: "this body
 * matched its digest here").
 */
function clean(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const named = new Set(
    [headers.connection ?? []]
      .flat()
      .flatMap((v) => v.split(','))
      .map((v) => v.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) {
    const key = k.toLowerCase();
    if (v !== undefined && !HOP.has(key) && !named.has(key) && !key.startsWith('x-dragonfly-') && !key.startsWith('x-damselfly-')) out[k] = v;
  }
  return out;
}

export async function passthrough(req: IncomingMessage, res: ServerResponse, url: URL, dispatcher: Dispatcher, signal: AbortSignal): Promise<number> {
  const hasBody = req.method !== 'GET' && req.method !== 'HEAD';
  let up: Dispatcher.ResponseData;
  try {
    up = await request(url, {
      method: req.method as Dispatcher.HttpMethod,
      headers: clean(req.headers),
      body: hasBody ? req : undefined,
      dispatcher,
      signal,
      headersTimeout: 60_000,
      bodyTimeout: 300_000,
    });
  } catch (err) {
    if (signal.aborted) throw err;
    throw dfError('DF_UPSTREAM', `${redactUrl(url.href)}: ${describeError(err)}`, err);
  }
  res.writeHead(up.statusCode, clean(up.headers));
  if (req.method === 'HEAD') {
    up.body.on('error', () => {});
    up.body.destroy();
    res.end();
  } else await pipeline(up.body, res);
  return up.statusCode;
}
