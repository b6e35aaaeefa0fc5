// A TCP relay that adds a fixed one-way delay to every chunk in both directions (order kept), standing in for a
// registry a few milliseconds away: what a Range read costs when every origin round trip is not free.
import { connect, createServer } from 'node:net';

export async function latencyRelay(target, delayMs) {
  const sockets = new Set();
  const delayed = (from, to) => {
    from.on('data', (chunk) => setTimeout(() => to.destroyed || to.write(chunk), delayMs));
    from.on('end', () => setTimeout(() => to.end(), delayMs));
  };
  const server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    delayed(client, upstream);
    delayed(upstream, client);
    const done = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', done).on('close', done);
    upstream.on('error', done).on('close', done);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((r) => (sockets.forEach((s) => s.destroy()), server.close(r))),
  };
}
