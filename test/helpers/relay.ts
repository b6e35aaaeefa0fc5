/**
 * The plumbing every test/benchmark TCP relay in front of an origin shares: accept a client, connect upstream, let a
 * behaviour wire the two (throttle, gate, delay), tear both down together, and close everything at the end.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface Relay {
  url: string;
  /** Live sockets, both sides of every connection. */
  sockets: Set<Socket>;
  close(): Promise<void>;
}

export async function tcpRelay(
  target: { host: string; port: number },
  wire: (client: Socket, upstream: Socket) => void,
  /** Whether a new connection is let through at all (refused ones are destroyed at once). */
  accept: () => boolean = () => true,
  /**
   * How long after one side closes the other is torn down: a relay that delays data must let what it still holds go
   * first (a server answering and closing at once, as Go's does for a HEAD with `connection: close`, lost its answer).
   */
  lingerMs = 0,
): Promise<Relay> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    if (!accept()) return void client.destroy();
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    wire(client, upstream);
    const done = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    const later = () => (lingerMs > 0 ? void setTimeout(done, lingerMs) : done());
    client.on('error', done).on('close', later);
    upstream.on('error', done).on('close', later);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    sockets,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
