/**
 * Which supernode a task belongs to: rendezvous (highest random weight) hashing over the supernode URLs, so every
 * dfdaemon sends a task to the same supernode without asking anyone, a supernode preheating a blob seeds it on that
 * same one, and a supernode leaving moves only its own tasks. The URLs must be spelt alike everywhere (the chart
 * gives dfdaemons and supernodes one list).
 */
import { createHash } from 'node:crypto';

/** `urls` in rendezvous order for `taskId`: the first is the task's supernode, the next ones its stand-ins. */
export function rendezvous(urls: readonly string[], taskId: string): string[] {
  const score = (u: string) => createHash('sha256').update(`${u}\0${taskId}`).digest().readUInt32BE(0);
  return [...urls].sort((a, b) => score(b) - score(a));
}
