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

/** Drops a response body we will not read, without an unhandled 'error' from the abort. */
export function discard(body: NodeJS.ReadableStream & { destroy(err?: Error): unknown }): void {
  body.on('error', () => {});
  body.destroy();
}
