/** Resolves after `ms`, or rejects as soon as `signal` aborts. */
export function sleep(ms: number, { signal }: { signal?: AbortSignal } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Rejects with the signal's reason once it aborts, never resolves: the losing side of a race against some work. It is
 * handled here, so an abort after the race was decided is no unhandled rejection.
 */
export function aborted(signal: AbortSignal): Promise<never> {
  const p = new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
  p.catch(() => {});
  return p;
}

/**
 * `p`, or the signal's reason once it aborts first; the listener goes with the race (a long-lived signal raced against
 * many promises gathers none).
 */
export function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Drops a response body we will not read, without an unhandled 'error' from the abort. */
export function discard(body: NodeJS.ReadableStream & { destroy(err?: Error): unknown }): void {
  body.on('error', () => {});
  body.destroy();
}
