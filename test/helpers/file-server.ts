/** Plain HTTP origins (not registries) serving one file with Range support, via node's own http server. */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import { parseRange, type ByteRange } from '@damselfly/shared';

export async function serveFile(t: { teardown(fn: () => unknown): void }, data: Buffer, path = '/files/blob.bin'): Promise<string> {
  return (await shapedOrigin(t, data, () => {}, path)).url;
}

/**
 * The same origin, whose answers a test can shape per request: `answer(i, range, res)` (i: the request's number,
 * from 0) answers by itself and returns true, or returns nothing for the plain answer (after the promise it returns,
 * if any: an origin that takes its time). `ranges` lists every request's Range header (`none` without one).
 */
export async function shapedOrigin(
  t: { teardown(fn: () => unknown): void },
  data: Buffer,
  answer: (i: number, range: ByteRange | undefined, res: ServerResponse) => boolean | void | Promise<boolean | void>,
  path = '/files/blob.bin',
): Promise<{ url: string; ranges: string[] }> {
  const ranges: string[] = [];
  const server = createServer(async (req, res) => {
    if (req.url?.split('?')[0] !== path) return void res.writeHead(404).end();
    let r: ByteRange | undefined;
    try {
      r = parseRange(req.headers.range, data.length);
    } catch {
      return void res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end();
    }
    ranges.push(req.headers.range ?? 'none');
    if (await answer(ranges.length - 1, r, res)) return;
    if (res.destroyed) return;
    if (!r) return void res.writeHead(200, { 'content-length': data.length }).end(data);
    res.writeHead(206, { 'content-length': r.end - r.start + 1, 'content-range': `bytes ${r.start}-${r.end}/${data.length}` });
    res.end(data.subarray(r.start, r.end + 1));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}${path}`, ranges };
}

/**
 * An origin whose object changes: request `i` (from 1) sees version `version(i)` of `versions`, each with its name as
 * a strong ETag (`"A"`), and, like any HTTP server, a Range asked with an If-Range that is not the current ETag gets the
 * whole current version. `delay(version, start)`: milliseconds before a range's answer. Any path serves the object;
 * `requests` holds every request's headers.
 */
export async function versionedOrigin(
  t: { teardown(fn: () => unknown): void },
  versions: Record<string, Buffer>,
  version: (i: number) => string,
  delay: (version: string, start: number) => number = () => 0,
): Promise<{ url: string; requests: { headers: IncomingHttpHeaders }[] }> {
  const requests: { headers: IncomingHttpHeaders }[] = [];
  const server = createServer((req, res) => {
    requests.push({ headers: req.headers });
    const tag = version(requests.length);
    const body = versions[tag]!;
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    const ifRange = req.headers['if-range'];
    if (!m || (ifRange !== undefined && ifRange !== `"${tag}"`)) return void res.writeHead(200, { etag: `"${tag}"`, 'content-length': body.length }).end(body);
    const [a, b] = [Number(m[1]), Math.min(Number(m[2]), body.length - 1)];
    const send = () => res.writeHead(206, { etag: `"${tag}"`, 'content-range': `bytes ${a}-${b}/${body.length}`, 'content-length': b - a + 1 }).end(body.subarray(a, b + 1));
    const ms = delay(tag, a);
    if (ms > 0) setTimeout(send, ms);
    else send();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, requests };
}
