/**
 * A TCP relay in front of an origin that lets a fixed number of response bytes through (all connections together)
 * and then either holds every connection until `release()` or cuts them all (and every later one): a test can then
 * look at the cluster while a piece is provably still arriving, or watch an origin die mid-piece, without timing.
 */
import { tcpRelay } from './relay.js';

export interface Gate {
  url: string;
  /** Response bytes passed so far. */
  readonly passed: number;
  /** True once the budget is used up and bytes are waiting (hold mode) or were refused (cut mode). */
  readonly closed: boolean;
  /** Resolves once the budget is used up. */
  reached: Promise<void>;
  /** Lets everything through from now on (hold mode). */
  release(): void;
  close(): Promise<void>;
}

export async function gatedRelay(target: { host: string; port: number }, budget: number, mode: 'hold' | 'cut'): Promise<Gate> {
  const waiting: (() => void)[] = [];
  let passed = 0;
  let open = true;
  let released = false;
  let reach!: () => void;
  const reached = new Promise<void>((r) => (reach = r));
  const shut = () => {
    if (!open) return;
    open = false;
    reach();
    if (mode === 'cut') for (const s of relay.sockets) s.destroy();
  };
  const relay = await tcpRelay(
    target,
    (client, upstream) => {
      client.pipe(upstream);
      const forward = (chunk: Buffer) => {
        if (released) return void client.write(chunk);
        const room = budget - passed;
        if (room > 0) {
          const part = chunk.subarray(0, room);
          passed += part.length;
          client.write(part);
          chunk = chunk.subarray(part.length);
        }
        if (chunk.length === 0) return;
        shut();
        if (mode === 'cut') return;
        // Hold: nothing more until released, and the origin is paused meanwhile (as a stalled link would be).
        upstream.pause();
        const rest = chunk;
        waiting.push(() => {
          client.write(rest);
          upstream.resume();
        });
      };
      upstream.on('data', forward);
      upstream.on('end', () => client.end());
    },
    // Once cut, the origin stays dead: later connections are refused too.
    () => open || mode !== 'cut',
  );
  return {
    url: relay.url,
    get passed() {
      return passed;
    },
    get closed() {
      return !open;
    },
    reached,
    release() {
      released = true;
      for (const w of waiting.splice(0)) w();
    },
    close: relay.close,
  };
}
