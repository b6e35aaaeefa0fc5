/**
 * A TCP relay in front of the registry that caps its total egress (all connections share one budget), so a test can act "mid-download" on loopback, where an
 * unthrottled transfer finishes before anything else can happen. Bytes pass unchanged.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Transform } from 'node:stream';

export async function throttledRelay(target: { host: string; port: number }, bytesPerSec: number): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  // One token bucket for all connections: the cap is the origin's total egress, as with a real uplink.
  let nextFree = 0;
  const delayFor = (bytes: number) => {
    const now = performance.now();
    nextFree = Math.max(now, nextFree) + (bytes / bytesPerSec) * 1000;
    return nextFree - now;
  };
  const server: Server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    const slow = () =>
      new Transform({
        transform(chunk: Buffer, _enc, cb) {
          setTimeout(() => cb(null, chunk), delayFor(chunk.length));
        },
      });
    client.pipe(upstream);
    upstream.pipe(slow()).pipe(client);
    const done = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', done).on('close', done);
    upstream.on('error', done).on('close', done);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
