/**
 * A TCP relay that adds a fixed one-way delay to every chunk in both directions (order kept), standing in for a
 * registry a few milliseconds away: what a Range read costs when every origin round trip is not free.
 */
import type { Socket } from 'node:net';
import { tcpRelay, type Relay } from './relay.js';

export function latencyRelay(target: { host: string; port: number }, delayMs: number): Promise<Relay> {
  const delayed = (from: Socket, to: Socket) => {
    from.on('data', (chunk: Buffer) => setTimeout(() => to.destroyed || to.write(chunk), delayMs));
    from.on('end', () => setTimeout(() => to.end(), delayMs));
  };
  return tcpRelay(
    target,
    (client, upstream) => {
      delayed(client, upstream);
      delayed(upstream, client);
    },
    undefined,
    // Data and the end of a side still on their way are delivered before the other side is torn down.
    delayMs + 5,
  );
}
