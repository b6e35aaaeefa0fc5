/**
 * A client gets a blob only if the origin would give it to that client. For a blob the supernode found public (the
 * origin serves it anonymously) nothing is asked; otherwise the origin is asked once per (client credentials,
 * repository, digest) with the client's own credentials, and the answer is remembered briefly. A refusal carries the
 * origin's own status and challenge back to the client. An origin that cannot answer is a refusal (fail closed).
 */
import { createHash } from 'node:crypto';
import type { Dispatcher } from 'undici';
import { canonicalUrl, checkOriginAccess, credentialHeaders, describeError, redactUrl, type Logger, type TaskInfo } from '@damselfly/shared';
import type { DaemonMetrics } from '../metrics.js';
import { dfError } from '../errors.js';

/** A refusal is remembered only briefly: the client is probably about to come back with a token. */
const DENIED_TTL_MS = 5_000;
const MAX_ENTRIES = 10_000;

interface Entry {
  until: number;
  denied?: { status: number; wwwAuthenticate?: string };
}

export class AccessGuard {
  readonly #dispatcher: Dispatcher;
  readonly #ttlMs: number;
  readonly #metrics: DaemonMetrics;
  readonly #log: Logger;
  readonly #cache = new Map<string, Entry>();

  constructor(opts: { ttlMs: number }, c: { dispatcher: Dispatcher; metrics: DaemonMetrics; log: Logger }) {
    this.#ttlMs = opts.ttlMs;
    this.#dispatcher = c.dispatcher;
    this.#metrics = c.metrics;
    this.#log = c.log;
  }

  /**
   * The origin just gave `url` to `headers` (the supernode's size probe, made with them): their access is known for
   * as long as a check of our own would be remembered (nothing when answers are not remembered).
   */
  remember(url: URL, headers: Record<string, string>): void {
    if (this.#ttlMs <= 0) return;
    this.#put(keyOf(url, headers), { until: Date.now() + this.#ttlMs });
  }

  /** Resolves if `headers` may read `url` (task `info`); throws DF_ACCESS_DENIED with the origin's status otherwise. */
  async authorize(url: URL, headers: Record<string, string>, info: TaskInfo, { signal }: { signal?: AbortSignal } = {}): Promise<void> {
    if (info.public) return;
    const key = keyOf(url, headers);
    const now = Date.now();
    let entry = this.#cache.get(key);
    if (!entry || entry.until <= now) {
      entry = await this.#ask(url, headers, signal);
      this.#put(key, entry);
    } else this.#metrics.accessChecks.inc({ result: entry.denied ? 'cached_denied' : 'cached_ok' });
    if (entry.denied) {
      const e = dfError('DF_ACCESS_DENIED', `${entry.denied.status} from ${redactUrl(url.href)}`);
      Object.assign(e, { status: entry.denied.status, headers: entry.denied.wwwAuthenticate ? { 'www-authenticate': entry.denied.wwwAuthenticate } : {} });
      throw e;
    }
  }

  #put(key: string, entry: Entry): void {
    this.#cache.delete(key);
    this.#cache.set(key, entry);
    if (this.#cache.size > MAX_ENTRIES) this.#cache.delete(this.#cache.keys().next().value!);
  }

  async #ask(url: URL, headers: Record<string, string>, signal?: AbortSignal): Promise<Entry> {
    const t0 = performance.now();
    try {
      const answer = await checkOriginAccess({ url, headers, dispatcher: this.#dispatcher, signal });
      this.#metrics.accessChecks.inc({ result: answer.ok ? 'ok' : 'denied' });
      this.#metrics.accessCheckRequests.inc(answer.requests);
      this.#metrics.accessCheckSeconds.observe((performance.now() - t0) / 1000);
      if (answer.ok) return { until: Date.now() + this.#ttlMs };
      return { until: Date.now() + DENIED_TTL_MS, denied: { status: answer.status, wwwAuthenticate: answer.wwwAuthenticate } };
    } catch (err) {
      signal?.throwIfAborted();
      this.#metrics.accessChecks.inc({ result: 'error' });
      this.#log.warn({ url: redactUrl(url.href), err: describeError(err) }, 'access:check-failed');
      throw dfError('DF_ACCESS_UNVERIFIED', `${redactUrl(url.href)}: ${describeError(err)}`, err);
    }
  }
}

/** The cache key: never a credential, only a hash of everything that could be one (headers, userinfo, query). */
function keyOf(url: URL, headers: Record<string, string>): string {
  // Every header that may be a credential, not only Authorization and Cookie: two clients differing only in an API
  // key header of the origin's own are two clients.
  const material = JSON.stringify([url.href, credentialHeaders(headers)]);
  return `${createHash('sha256').update(material).digest('hex')} ${canonicalUrl(url)}`;
}
