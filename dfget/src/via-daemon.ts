/**
 * Download through the local dfdaemon's proxy (the normal path on a node that runs one). A transfer the daemon cuts
 * short is asked for once more from where it stopped: the answer either resumes it or says why it was cut (a digest
 * mismatch, a refusal), which a dropped connection alone cannot.
 */
import { Client, type Dispatcher } from 'undici';
import { OUTPUT_HEADER, VERIFIED_HEADER, validatorOf, type LinkLine } from '@damselfly/shared';
import type { DfgetOptions } from './options.js';
import type { Sink } from './sink.js';
import { FileSink } from './file-sink.js';
import type { Progress } from './progress.js';
import { dfgetError } from './errors.js';
import { hasCode } from './classify.js';
import { daemonAnswerError, daemonError, proxyForbidden, type DaemonAnswer } from './daemon-answer.js';

/** Longest wait for the dfdaemon's answer to begin. */
const DAEMON_HEADERS_MS = 10 * 60_000;

/** Connection failures that mean no daemon listens there (the caller then downloads standalone). */
const ABSENT = ['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EADDRNOTAVAIL'];

/** Returns false when no daemon listens, or it will not proxy this host; the caller then downloads standalone. */
export async function viaDaemon(o: DfgetOptions, sink: Sink, progress: Progress, signal: AbortSignal): Promise<boolean> {
  // A daemon answers once the first block is verified, which waits for the origin's first bytes (a slow registry, a
  // token dance): a generous deadline, but one, so a daemon that takes the connection and never answers does not hold
  // dfget for good when no --timeout was given.
  const client = new Client(o.daemon, { connectTimeout: 2000, headersTimeout: DAEMON_HEADERS_MS, bodyTimeout: 120_000 });
  try {
    // A file on this host may be a link to the dfdaemon's own copy (see OUTPUT_HEADER), unless --copy.
    const linkable = sink instanceof FileSink && !o.copy ? sink : undefined;
    let res = await ask(client, o, signal, undefined, undefined, linkable !== undefined);
    if (!res) return false;
    if (linkable && res.statusCode === 200 && res.headers[OUTPUT_HEADER] === 'link') {
      if (await takeLink(res, linkable, o, progress, signal)) return true;
      // Not linkable here after all, or the answer was cut: the bytes, the usual way (an error is said there).
      progress.stop();
      res = await ask(client, o, signal);
      if (!res) throw dfgetError('DFGET_HTTP', `the dfdaemon at ${o.daemon} stopped answering`);
    }
    if (res.statusCode !== 200) {
      const answer = await readAnswer(res, signal);
      const forbidden = proxyForbidden(answer);
      if (forbidden !== undefined) {
        process.stderr.write(`dfget: the dfdaemon at ${o.daemon}: ${forbidden.trim()}; downloading standalone\n`);
        return false;
      }
      throw daemonAnswerError(answer, o.daemon, o.url);
    }
    const total = contentLength(res);
    progress.start(total ?? 0);
    // Only the dfdaemon's own word counts, not a Docker-Content-Digest it relayed from the upstream.
    if (!o.verify && o.digest && res.headers[VERIFIED_HEADER] === o.digest) sink.vouch(o.digest);
    let cut = await pump(res, sink, progress, signal);
    if (!cut && (total === undefined || sink.bytes === total)) return true;
    const what = () => `the dfdaemon at ${o.daemon} cut the transfer after ${sink.bytes} of ${total ?? '?'} bytes`;
    if (total === undefined || sink.bytes > total) throw dfgetError('DFGET_HTTP', `${what()}${cut ? ` (${cut.message})` : ''}`, cut);
    const cutAt = what();
    // Without a digest only the version's ETag ties the rest to the start: the daemon answers the whole object
    // instead of a part when its copy is another version now (refused below), never a part of another version.
    const version = validatorOf(res.headers);
    const again = await ask(client, o, signal, sink.bytes, version);
    if (!again) throw dfgetError('DFGET_HTTP', `${cutAt}, and is gone`);
    // The rest of the same object: from where it stopped, of the same total size and ETag (a different one is another
    // version, which must not be spliced onto this one's start).
    const rest = contentRange(again);
    const otherVersion = version !== undefined && again.headers.etag !== version;
    if (again.statusCode !== 206 || rest?.start !== sink.bytes || rest.total !== total || otherVersion) {
      const answer = await readAnswer(again, signal);
      if (again.statusCode >= 400) throw daemonAnswerError(answer, o.daemon, o.url, cutAt);
      if (otherVersion) throw dfgetError('DFGET_HTTP', `${cutAt}, and the object changed since (${String(again.headers.etag ?? 'no ETag')} now, not ${version}): run dfget again`);
      throw dfgetError('DFGET_HTTP', `${cutAt}, then answered ${again.statusCode} to the request for the rest`);
    }
    // The word was for one unbroken answer. The rest comes as a Range, which the dfdaemon serves without the whole
    // blob's check (the task it checked may be gone, found not to match): the whole file is hashed here instead.
    await sink.unvouch();
    cut = await pump(again, sink, progress, signal);
    if (cut || sink.bytes !== total) throw dfgetError('DFGET_HTTP', `${what()}, twice${cut ? ` (${cut.message})` : ''}`, cut);
    return true;
  } finally {
    // destroy, not close: close would wait for a request still hanging on a stuck daemon.
    await client.destroy().catch(() => {});
  }
}

/**
 * Follows a link answer: true once the output is a link to the dfdaemon's complete, verified file; false when it
 * cannot be (another filesystem, no right to link the file, the answer cut or ended early, a download failure the
 * dfdaemon says may pass), with nothing written. Throws the failure the dfdaemon says asking again would not help.
 */
async function takeLink(res: Dispatcher.ResponseData, sink: FileSink, o: DfgetOptions, progress: Progress, signal: AbortSignal): Promise<boolean> {
  let shown = 0;
  let failed: Error | undefined;
  try {
    for await (const l of lines(res.body as AsyncIterable<Buffer>)) {
      if ('error' in l) {
        // The dfdaemon says whether asking again may help (only not for bytes found not to be their digest).
        if (l.again) return false;
        throw (failed = daemonError(l.error, o.daemon));
      }
      if ('file' in l) {
        // Known not to work before the download even ends: the bytes are asked for now, while they are still coming.
        if (!(await sink.canLink(l.file))) return false;
        progress.start(l.size);
      } else if ('done' in l) {
        // Only the dfdaemon's own word counts (the header is never relayed from an upstream), and --verify hashes anyway.
        const vouched = !o.verify && o.digest !== undefined && l.verified === o.digest ? o.digest : undefined;
        // The answer is closed as soon as the output is linked: with --verify (or no digest) the whole file is read and
        // hashed next, which for a big blob outlasts the dfdaemon's wait for the close, and the hand-out would stay lent.
        if (!(await sink.link(l.path, l, vouched, () => res.body.destroy()))) return false;
        progress.add(l.size - shown);
        return true;
      } else if ('bytes' in l && l.bytes > shown) {
        progress.add(l.bytes - shown);
        shown = l.bytes;
      }
    }
    return false;
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    if (sink.failure) throw sink.failure;
    if (err === failed) throw err;
    return false;
  } finally {
    // Closing the answer tells the dfdaemon it may let go of the file.
    if (!res.body.destroyed) res.body.destroy();
  }
}

/** The answer's JSON lines; a line that is not one (or not JSON at all) ends the answer as cut. */
async function* lines(body: AsyncIterable<Buffer>): AsyncGenerator<LinkLine> {
  let rest = '';
  for await (const chunk of body) {
    rest += chunk.toString('utf8');
    // A link answer's lines are short: anything this long is not one.
    if (rest.length > 64 * 1024) throw new Error('not a link answer');
    let i: number;
    while ((i = rest.indexOf('\n')) >= 0) {
      const l = JSON.parse(rest.slice(0, i)) as unknown;
      rest = rest.slice(i + 1);
      if (!isLinkLine(l)) throw new Error('not a link answer');
      yield l;
    }
  }
}

function isLinkLine(l: unknown): l is LinkLine {
  if (typeof l !== 'object' || l === null) return false;
  const o = l as Record<string, unknown>;
  // One kind of line each: a line that is two would be read as one kind and checked as another.
  if (['done', 'file', 'error', 'bytes'].filter((k) => k in o).length !== 1) return false;
  if ('done' in o) {
    const strings = [o.path, o.dev, o.ino, o.mtimeNs].every((v) => typeof v === 'string');
    return o.done === true && strings && Number.isSafeInteger(o.size) && (o.verified === undefined || typeof o.verified === 'string');
  }
  if ('file' in o) return typeof o.file === 'string' && Number.isSafeInteger(o.size);
  if ('error' in o) {
    const e = o.error as Record<string, unknown> | null;
    return typeof e === 'object' && e !== null && Number.isSafeInteger(e.status) && (e.status as number) >= 400 && (e.status as number) < 600 && typeof e.code === 'string' && typeof e.message === 'string' && typeof o.again === 'boolean';
  }
  return Number.isSafeInteger(o.bytes);
}

/**
 * GETs the URL through the daemon (from byte `from` on, if still version `ifRange`, when given; as a link answer when
 * `link`); null when nothing listens there.
 */
async function ask(client: Client, o: DfgetOptions, signal: AbortSignal, from?: number, ifRange?: string, link = false): Promise<Dispatcher.ResponseData | null> {
  try {
    return await client.request({
      method: 'GET',
      path: o.url.href,
      headers: {
        ...o.headers,
        ...(o.digest ? { 'x-damselfly-digest': o.digest } : {}),
        ...(from !== undefined ? { range: `bytes=${from}-` } : {}),
        ...(ifRange !== undefined ? { 'if-range': ifRange } : {}),
        ...(link ? { [OUTPUT_HEADER]: 'link' } : {}),
      },
      signal,
    });
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    if (hasCode(err, ...ABSENT)) return null;
    throw dfgetError('DFGET_HTTP', `the dfdaemon at ${o.daemon}: ${(err as Error).message}`, err);
  }
}

/**
 * Copies the body into the sink. Returns the transport error that ended it early (undefined for a clean end); throws
 * what is not the sender's doing: the run stopping (timeout, signal) or the sink failing (the user's disk).
 */
async function pump(res: Dispatcher.ResponseData, sink: Sink, progress: Progress, signal: AbortSignal): Promise<Error | undefined> {
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      await sink.write(chunk);
      progress.add(chunk.length);
    }
    return undefined;
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    if (sink.failure) throw sink.failure;
    return err as Error;
  } finally {
    if (!res.body.destroyed) res.body.destroy();
  }
}

/** An error answer's body, at most 64 KiB of it (it is only read to be shown). */
async function readAnswer(res: Dispatcher.ResponseData, signal: AbortSignal): Promise<DaemonAnswer> {
  const parts: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      parts.push(chunk);
      if ((size += chunk.length) >= 64 * 1024) break;
    }
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    // A body cut short is still worth showing as far as it got.
  } finally {
    if (!res.body.destroyed) res.body.destroy();
  }
  return { status: res.statusCode, body: Buffer.concat(parts).toString('utf8') };
}

function contentLength(res: Dispatcher.ResponseData): number | undefined {
  const v = res.headers['content-length'];
  const n = typeof v === 'string' ? Number(v) : NaN;
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** `Content-Range: bytes <start>-<end>/<total>`, read: where the answer starts and the object's whole size. */
function contentRange(res: Dispatcher.ResponseData): { start: number; total: number } | undefined {
  const m = /^bytes (\d+)-\d+\/(\d+)$/.exec(String(res.headers['content-range'] ?? ''));
  return m ? { start: Number(m[1]), total: Number(m[2]) } : undefined;
}
