/** Plain HTTP origins (not registries) serving one file with Range support, via node's own http server. */
import { createServer, type ServerResponse } from 'node:http';
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
