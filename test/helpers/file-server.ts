/** A plain HTTP origin (not a registry) serving one file with Range support, via node's own http server. */
import { createServer } from 'node:http';
import { parseRange } from '@damselfly/shared';

export async function serveFile(t: { teardown(fn: () => unknown): void }, data: Buffer, path = '/files/blob.bin'): Promise<string> {
  const server = createServer((req, res) => {
    if (req.url?.split('?')[0] !== path) return void res.writeHead(404).end();
    try {
      const r = parseRange(req.headers.range, data.length);
      if (!r) return void res.writeHead(200, { 'content-length': data.length }).end(data);
      res.writeHead(206, { 'content-length': r.end - r.start + 1, 'content-range': `bytes ${r.start}-${r.end}/${data.length}` });
      res.end(data.subarray(r.start, r.end + 1));
    } catch {
      res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise((r) => server.close(r)));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}${path}`;
}
