/** Download through the local dfdaemon's proxy (the normal path on a node that runs one). */
import { once } from 'node:events';
import { Client } from 'undici';
import type { DfgetOptions } from './options.js';
import type { FileSink } from './sink.js';
import type { Progress } from './progress.js';
import { dfgetError } from './errors.js';

/** Returns false when no daemon listens (the caller then downloads standalone). */
export async function viaDaemon(o: DfgetOptions, sink: FileSink, progress: Progress, signal: AbortSignal): Promise<boolean> {
  const client = new Client(o.daemon, { connectTimeout: 2000, headersTimeout: 0, bodyTimeout: 120_000 });
  try {
    let res;
    try {
      res = await client.request({
        method: 'GET',
        path: o.url.href,
        headers: { ...o.headers, ...(o.digest ? { 'x-damselfly-digest': o.digest } : {}) },
        signal,
      });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ECONNREFUSED' || code === 'UND_ERR_CONNECT_TIMEOUT') return false;
      throw err;
    }
    if (res.statusCode !== 200) {
      const text = await res.body.text().catch(() => '');
      let msg = text;
      let code: string | undefined;
      try {
        ({ message: msg = text, code } = JSON.parse(text) as { message?: string; code?: string });
      } catch {}
      // The daemon only proxies hosts it is configured for; anything else is fetched by this process itself.
      if (code === 'DF_PROXY_FORBIDDEN') {
        process.stderr.write(`dfget: ${msg.trim()}; downloading standalone\n`);
        return false;
      }
      throw dfgetError('DFGET_HTTP', `${res.statusCode} from dfdaemon: ${msg.trim()}`);
    }
    progress.start(Number(res.headers['content-length'] ?? 0));
    const expected = Number(res.headers['content-length']);
    const cut = () =>
      dfgetError('DFGET_HTTP', `dfdaemon cut the transfer after ${sink.bytes} of ${expected} bytes (the blob failed verification or a source failed; see the dfdaemon log)`);
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        sink.observe(chunk);
        progress.add(chunk.length);
        if (!sink.stream.write(chunk)) await once(sink.stream, 'drain', { signal });
      }
    } catch (err) {
      if (signal.aborted) throw err;
      throw cut();
    }
    if (Number.isFinite(expected) && sink.bytes !== expected) throw cut();
    return true;
  } finally {
    await client.close().catch(() => {});
  }
}
