/**
 * Small misbehaving HTTP servers on loopback, standing in for an origin or a dfdaemon that is broken in one precise
 * way: one that trickles its body, one that never answers, or any scripted answer. Connections are cut at teardown.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

export type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

export interface TestServer {
  url: string;
  /** Requests seen so far: method, url (absolute-form when used as a proxy) and headers. */
  requests: { method: string; url: string; headers: IncomingMessage['headers'] }[];
}

export async function httpServer(t: { teardown(fn: () => unknown): void }, handler: Handler): Promise<TestServer> {
  const requests: TestServer['requests'] = [];
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    handler(req, res, requests.length);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, requests };
}

/** Answers 200 with a Content-Length of `size` at once, then sends one byte per second. */
export function trickle(size: number): Handler {
  return (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
    res.flushHeaders();
    const timer = setInterval(() => res.write(Buffer.from('x')), 1000);
    res.on('close', () => clearInterval(timer));
  };
}

/** Accepts the request and never answers, not even headers. */
export const silent: Handler = () => {};
