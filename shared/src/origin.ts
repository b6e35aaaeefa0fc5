/**
 * HTTP access to the origin (registry or any URL): probing a blob's size and fetching byte ranges. Used by the
 * supernode's seeder and by dfdaemon's back-to-source path, so retry/redirect behaviour lives in one place.
 */
import { Agent, interceptors, request, type Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import { DamselflyError, errorFactory, type ErrorTable } from './errors.js';
import { discard } from './abort.js';
import { isCertificateError } from './origin-tls.js';
import { BulkClient, type BulkBody } from './bulk-client.js';
import { guardedLookup, refuseForbiddenLiteral, type AddressPolicy } from './net-guard.js';
import type { OriginTls } from './origin-tls.js';
import { originRequestHeaders } from './origin-headers.js';
import { credentialsStayWithOrigin } from './redirect-credentials.js';

export const OriginErrors = {
  ORIGIN_UNREACHABLE: { message: 'origin unreachable: %s', status: 502 },
  ORIGIN_AUTH: { message: 'origin refused credentials: %s', status: 401 },
  ORIGIN_NOT_FOUND: { message: 'origin has no such object: %s', status: 404 },
  ORIGIN_BAD_STATUS: { message: 'origin answered %s', status: 502 },
  ORIGIN_BAD_RANGE: { message: 'origin sent the wrong range: %s', status: 502 },
  ORIGIN_NO_RANGE: { message: 'origin ignores Range: %s', status: 502 },
  ORIGIN_TOO_LARGE: { message: 'origin object too large: %s', status: 413 },
  ORIGIN_CHANGED: { message: 'the object changed at the origin while its pieces were being fetched: %s', status: 502 },
  ORIGIN_TLS: { message: 'cannot verify the origin\'s TLS certificate: %s (give its CA with originCaFiles)', status: 502 },
} as const satisfies ErrorTable<string>;

export const originError = errorFactory(OriginErrors);

/**
 * A keep-alive agent that follows redirects (registries 307 to object storage). A hop to another origin goes without
 * the requester's credentials (redirect-credentials.ts). With `connect` (see net-guard), every connection, redirect
 * hops included, goes through it.
 */
export function createOriginDispatcher(opts: { connections?: number; connect?: Agent.Options['connect'] } = {}): Dispatcher {
  return new Agent({ connections: opts.connections ?? 16, keepAliveTimeout: 10_000, connectTimeout: 10_000, ...(opts.connect ? { connect: opts.connect } : {}) }).compose(
    credentialsStayWithOrigin(),
    interceptors.redirect({ maxRedirections: 5 }),
  );
}

export interface ProbeResult {
  contentLength: number;
  acceptsRanges: boolean;
  /**
   * What tells this version of the object from the next: its strong ETag (absent when the origin sends none, or only a
   * weak one). Pieces asked for with it (`OriginRequest.validator`) come from this version or not at all. Not
   * Last-Modified: replicas behind one name may disagree on it (unsynchronised clocks, copies made at other times),
   * and every piece would then look like another version.
   */
  validator?: string;
  /**
   * With `head` asked for and a Range answer: the object's first min(head, size) bytes, still to be read. The caller
   * consumes or destroys it.
   */
  head?: Readable;
}

export interface OriginRequest {
  url: string;
  headers?: Record<string, string>;
  dispatcher?: Dispatcher;
  signal?: AbortSignal;
  /** Largest object size accepted by a probe (maxBlobSize). */
  maxLength?: number;
  /**
   * The probed version's validator: a range is asked with it as `If-Range`, so an object that changed since comes
   * back whole (200) instead of as a range of the new version, and is refused (ORIGIN_CHANGED) rather than stitched
   * to pieces of the old one.
   */
  validator?: string;
  /** The probed size: a range whose Content-Range names another total is of another version (ORIGIN_CHANGED). */
  total?: number;
}

/** Status of an origin answer mapped to a typed error (the origin's own status is kept for auth errors). */
function statusError(status: number, url: string, wwwAuth?: string): DamselflyError {
  const where = `${status} for ${redactUrl(url)}`;
  if (status === 401 || status === 403) {
    const e = originError('ORIGIN_AUTH', where);
    Object.assign(e, { status, wwwAuthenticate: wwwAuth });
    return e;
  }
  if (status === 404) return originError('ORIGIN_NOT_FOUND', where);
  return originError('ORIGIN_BAD_STATUS', where);
}

/** URL without its query string: signed query params are credentials too. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}${u.search ? '?…' : ''}`;
  } catch {
    return '<malformed url>';
  }
}

async function send(req: OriginRequest, range?: string) {
  try {
    return await request(req.url, {
      method: 'GET',
      headers: { ...originRequestHeaders(req.headers), ...(range ? { range, ...(req.validator ? { 'if-range': req.validator } : {}) } : {}), 'accept-encoding': 'identity' },
      dispatcher: req.dispatcher,
      signal: req.signal,
      headersTimeout: 30_000,
      bodyTimeout: 60_000,
    });
  } catch (err) {
    if (req.signal?.aborted) throw err;
    // A refused address is the operator's policy, not an outage: it keeps its own code and status.
    if ((err as { code?: string }).code === 'ADDRESS_FORBIDDEN') throw err;
    // An unverifiable certificate is a configuration problem to name, not an outage to retry or route around.
    if (isCertificateError(err)) throw originError('ORIGIN_TLS', `${redactUrl(req.url)}: ${(err as Error).message}`, err);
    throw originError('ORIGIN_UNREACHABLE', `${redactUrl(req.url)}: ${(err as Error).message}`, err);
  }
}

/** The first value of a response header (undici gives repeated headers as arrays). */
export function firstHeader(h: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** A size the origin announced, checked: a whole number we can address, and not beyond what this node accepts. */
function checkedLength(raw: string | undefined, req: OriginRequest): number {
  const n = Number(raw);
  if (raw === undefined || !/^\d+$/.test(raw) || !Number.isSafeInteger(n)) throw originError('ORIGIN_BAD_STATUS', `unusable size ${JSON.stringify(raw)} for ${redactUrl(req.url)}`);
  if (req.maxLength !== undefined && n > req.maxLength) throw originError('ORIGIN_TOO_LARGE', `${n} bytes > maxBlobSize ${req.maxLength} (${redactUrl(req.url)})`);
  return n;
}

/**
 * Learns the size of the object and whether the origin honours Range, by asking for its first byte; or, with `head`,
 * for its first `head` bytes, which then come back unread (`ProbeResult.head`): one round trip for the size and the
 * start of the object.
 */
export async function probeOrigin(req: OriginRequest, { head = 0 }: { head?: number } = {}): Promise<ProbeResult> {
  const res = await send(req, `bytes=0-${Math.max(0, head - 1)}`);
  const cr = firstHeader(res.headers, 'content-range');
  let kept = false;
  try {
    if (res.statusCode === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(cr ?? '');
      if (!m) throw originError('ORIGIN_BAD_RANGE', `Content-Range ${JSON.stringify(cr)}`);
      const contentLength = checkedLength(m[3], req);
      // Exactly the bytes asked for (or all of a smaller object), or the head is not used: the size still is.
      kept = head > 0 && Number(m[1]) === 0 && Number(m[2]) === Math.min(head, contentLength) - 1;
      const validator = validatorOf(res.headers);
      return { contentLength, acceptsRanges: true, ...(validator ? { validator } : {}), ...(kept ? { head: res.body } : {}) };
    }
    if (res.statusCode === 416) {
      // An empty object: nothing is satisfiable, the total is still reported.
      const m = /^bytes \*\/(\d+)$/.exec(cr ?? '');
      if (m) return { contentLength: checkedLength(m[1], req), acceptsRanges: true };
    }
    if (res.statusCode === 200) {
      // Range ignored (this time, or always): the version is named all the same, and a whole read is held to it.
      const validator = validatorOf(res.headers);
      return { contentLength: checkedLength(firstHeader(res.headers, 'content-length'), req), acceptsRanges: false, ...(validator ? { validator } : {}) };
    }
    throw statusError(res.statusCode, req.url, firstHeader(res.headers, 'www-authenticate'));
  } finally {
    if (!kept) discard(res.body);
  }
}

/** Whether a Content-Range header says exactly bytes [start, end] (of `total` bytes, when given). */
function isRange(contentRange: string | undefined, start: number, end: number, total?: number): boolean {
  const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(contentRange ?? '');
  return !!m && Number(m[1]) === start && Number(m[2]) === end && (total === undefined || Number(m[3]) === total);
}

/** An answer's strong ETag, its version (a weak one may not be used in If-Range); undefined without one. */
export function validatorOf(h: Record<string, string | string[] | undefined>): string | undefined {
  const etag = firstHeader(h, 'etag');
  return etag && !etag.startsWith('W/') ? etag : undefined;
}

/**
 * GETs bytes [start, end] (inclusive). Resolves once the origin has answered with exactly that range; the caller
 * consumes (or destroys) the returned body. With `whole`, asks for the entire object (origins without Range).
 */
export async function fetchOrigin(req: OriginRequest, start: number, end: number, whole = false): Promise<Readable> {
  const res = await send(req, whole ? undefined : `bytes=${start}-${end}`);
  // A whole read of another version than the one its pieces are (a kept piece is skipped, not read again).
  if (whole && res.statusCode === 200 && req.validator && validatorOf(res.headers) !== req.validator) {
    discard(res.body);
    throw originError('ORIGIN_CHANGED', `${redactUrl(req.url)}: not ${req.validator} any more`);
  }
  if (whole ? res.statusCode === 200 : res.statusCode === 206) {
    if (!whole) {
      const cr = firstHeader(res.headers, 'content-range');
      if (!isRange(cr, start, end, req.total)) {
        discard(res.body);
        if (isRange(cr, start, end)) throw originError('ORIGIN_CHANGED', `${redactUrl(req.url)} is ${JSON.stringify(cr)} now, was ${req.total} bytes`);
        throw originError('ORIGIN_BAD_RANGE', `asked ${start}-${end}, got ${JSON.stringify(cr)}`);
      }
    }
    return res.body;
  }
  discard(res.body);
  // Asked with If-Range, a whole answer of another version means the one asked for is gone; of the same version, that
  // the origin ignored Range this time (a pull-through cache on a miss).
  if (res.statusCode === 200 && req.validator && validatorOf(res.headers) !== req.validator) {
    throw originError('ORIGIN_CHANGED', `${redactUrl(req.url)}: not ${req.validator} any more`);
  }
  if (res.statusCode === 200) throw originError('ORIGIN_NO_RANGE', redactUrl(req.url));
  throw statusError(res.statusCode, req.url, firstHeader(res.headers, 'www-authenticate'));
}

/**
 * The supernode's fast path for piece bytes from an origin: a BulkClient (socket reads into a few reused buffers per
 * connection, not a fresh ArrayBuffer each; see bulk-client.ts), whose connections go through the same address
 * policy and TLS settings as the dispatcher's. It takes only the plain case, a 206 with exactly the range and a
 * Content-Length; anything else (a redirect to object storage, an error status, no Range support, a chunked body, a
 * connection it could not make) is asked again through `fetchOrigin`, which follows redirects and maps statuses to
 * their errors. An origin that answered so once is not tried this way again.
 */
export interface OriginFastPath {
  client: BulkClient;
  /** Origins (`scheme://host:port`) that answered other than plainly: they get the full client only. */
  skip: Set<string>;
}

/** The supernode's fast path: connections only to addresses `policy` permits, with each origin's TLS settings. */
export function originFastPath(policy: AddressPolicy, tls?: OriginTls): OriginFastPath {
  const lookup = guardedLookup(policy);
  return {
    skip: new Set(),
    client: new BulkClient({
      maxIdlePerHost: 16,
      dial: (host, port, secure) => {
        refuseForbiddenLiteral(policy, host);
        const extra = secure ? tls?.optionsFor(host, port) : undefined;
        return { lookup, ...(extra ? { tls: extra } : {}) };
      },
    }),
  };
}

/** GETs bytes [start, end] (inclusive) like `fetchOrigin`, through `fast` when the origin answers plainly. */
export async function fetchOriginRange(req: OriginRequest, start: number, end: number, fast?: OriginFastPath): Promise<Readable | BulkBody> {
  const origin = new URL(req.url).origin;
  if (fast && !fast.skip.has(origin)) {
    const headers: Record<string, string> = {
      ...originRequestHeaders(req.headers),
      'accept-encoding': 'identity',
      range: `bytes=${start}-${end}`,
      ...(req.validator ? { 'if-range': req.validator } : {}),
    };
    try {
      const res = await fast.client.get(req.url, { headers, signal: req.signal, headersTimeoutMs: 30_000, bodyTimeoutMs: 60_000 });
      if (res.statusCode === 206 && isRange(res.headers['content-range'], start, end, req.total) && res.body.length === end - start + 1) return res.body;
      res.body.discard();
      // A status the full client maps to an error is asked again there; only a different way of answering (a
      // redirect, no Range) sends this origin to the full client for good. Asked with If-Range, a 200 of another
      // version says the object changed, not how the origin answers.
      const changed = res.statusCode === 200 && req.validator !== undefined && validatorOf(res.headers) !== req.validator;
      if ((res.statusCode >= 300 && res.statusCode < 400) || (res.statusCode === 200 && !changed)) remember(fast, origin);
    } catch (err) {
      if (req.signal?.aborted) throw err;
      if ((err as { code?: string }).code === 'BULK_PROTOCOL') remember(fast, origin);
    }
  }
  return fetchOrigin(req, start, end);
}

function remember(fast: OriginFastPath, origin: string): void {
  // Bounded: a supernode fed endless distinct origins forgets them all rather than grow.
  if (fast.skip.size >= 10_000) fast.skip.clear();
  fast.skip.add(origin);
}
