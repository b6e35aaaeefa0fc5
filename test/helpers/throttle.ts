/**
 * A TCP relay in front of the registry that caps its total egress (all connections share one budget), so a test can act "mid-download" on loopback, where an
 * unthrottled transfer finishes before anything else can happen. Bytes pass unchanged.
 */
import type { Socket } from 'node:net';
import { Transform } from 'node:stream';
import { tcpRelay, type Relay } from './relay.js';

export async function throttledRelay(target: { host: string; port: number }, bytesPerSec: number): Promise<Relay> {
  // One token bucket for all connections: the cap is the origin's total egress, as with a real uplink.
  let nextFree = 0;
  const delayFor = (bytes: number) => {
    const now = performance.now();
    nextFree = Math.max(now, nextFree) + (bytes / bytesPerSec) * 1000;
    return nextFree - now;
  };
  return tcpRelay(target, (client: Socket, upstream: Socket) => {
    const slow = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        setTimeout(() => cb(null, chunk), delayFor(chunk.length));
      },
    });
    client.pipe(upstream);
    upstream.pipe(slow).pipe(client);
  });
}
