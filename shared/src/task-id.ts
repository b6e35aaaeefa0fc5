import { createHash } from 'node:crypto';
import { sharedError } from './errors.js';
import { parseDigest } from './digest.js';

/** Query parameters that sign or scope a URL but do not change the bytes behind it. */
const VOLATILE_PARAM = /^(x-amz-.*|x-goog-.*|expires|signature|ossaccesskeyid|ns)$/i;
/**
 * Query parameters whose value is a secret (a token, a key, an Azure SAS signature). They stay part of a URL's
 * identity (a `key` may select the object on some origin, so two values are two tasks), but their values are never
 * stored, shown or logged, and an anonymous request goes without them.
 */
const SECRET_PARAM = /^(sig|token|access_token|private_token|job_token|api_key|apikey|api-key|key|password|secret|auth)$/i;
const BLOB_RE = /\/blobs\/(sha256:[a-f0-9]{64})(?:$|[/?#])/;

/** Parses an http(s) URL or throws BAD_URL with the reason. */
export function parseHttpUrl(raw: string): URL {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw sharedError('BAD_URL', quoteUrlText(raw));
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw sharedError('BAD_URL', `${quoteUrlText(raw)} (only http and https are supported)`);
  }
  return u;
}

/**
 * A URL that did not parse, as an error may show it: without what sits before an `@` (user and password) and without
 * its query (signatures, tokens), which are often credentials; quoted, and cut short.
 */
export function quoteUrlText(raw: string): string {
  let text = raw.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1…@');
  const q = text.search(/[?#]/);
  if (q >= 0) text = `${text.slice(0, q)}?…`;
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
}

/** The OCI digest a registry blob URL names, if any. */
export function blobDigestOf(url: URL): string | undefined {
  return BLOB_RE.exec(url.pathname)?.[1];
}

/**
 * URL with credentials removed: no userinfo, no signature/scope query params, no fragment. Signed URLs of one object
 * share a task, and this is the only form of a URL that is ever persisted or shown.
 */
export function canonicalUrl(url: URL): string {
  const u = new URL(url.href);
  u.hash = '';
  u.username = '';
  u.password = '';
  for (const key of [...u.searchParams.keys()]) if (VOLATILE_PARAM.test(key)) u.searchParams.delete(key);
  u.searchParams.sort();
  return u.href;
}

/**
 * Request headers that cannot authenticate anybody. Any other header a client sends may be a credential: origins take
 * API keys in headers of their own (`X-Api-Key`, GitLab's `Private-Token`, Artifactory's `X-JFrog-Art-Api`, a
 * gateway's `X-Auth-Token`), so a header not named here counts as one rather than as harmless.
 */
const PLAIN_HEADERS = new Set([
  'accept',
  'accept-language',
  'user-agent',
  'cache-control',
  'pragma',
  'docker-distribution-api-version',
  // Fetch metadata (Node's fetch sends sec-fetch-mode), proxies' and tracing's own.
  'sec-fetch-mode',
  'sec-fetch-site',
  'sec-fetch-dest',
  'sec-fetch-user',
  'via',
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-request-id',
  'traceparent',
  'tracestate',
  'baggage',
]);

/** Whether a request header (any capitalisation) cannot authenticate anybody. */
export function isPlainHeader(name: string): boolean {
  return PLAIN_HEADERS.has(name.toLowerCase());
}

/**
 * The form of a URL that is stored, shown and logged: the canonical one, with the value of every secret-bearing
 * parameter replaced (its name stays, so an operator sees which credential the URL carried).
 */
export function displayUrl(url: URL): string {
  const u = new URL(canonicalUrl(url));
  for (const key of [...u.searchParams.keys()]) if (SECRET_PARAM.test(key)) u.searchParams.set(key, 'redacted');
  return u.href;
}

/** The URL an anonymous request goes to: the canonical one without its secret-bearing parameters. */
export function anonymousUrl(url: URL): URL {
  const u = new URL(canonicalUrl(url));
  for (const key of [...u.searchParams.keys()]) if (SECRET_PARAM.test(key)) u.searchParams.delete(key);
  return u;
}

/**
 * The headers of a request that may carry credentials (every one not known to be plain), sorted by name: what the
 * origin may decide a client's access on.
 */
export function credentialHeaders(headers: Record<string, string> = {}): [string, string][] {
  return Object.entries(headers)
    .map(([k, v]): [string, string] => [k.toLowerCase(), v])
    .filter(([k]) => !PLAIN_HEADERS.has(k))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * True when a request may carry credentials of its own: userinfo, signature or secret params, or any header that is not known
 * to be plain (Authorization and Cookie, and an API key in a header of the origin's own).
 */
export function carriesCredentials(url: URL, headers: Record<string, string> = {}): boolean {
  if (url.username || url.password) return true;
  for (const key of url.searchParams.keys()) if ((VOLATILE_PARAM.test(key) && key.toLowerCase() !== 'ns') || SECRET_PARAM.test(key)) return true;
  return credentialHeaders(headers).length > 0;
}

/**
 * Task id: what a task's bytes are bound to. A registry blob is keyed on its digest **and** its registry
 * (scheme://host:port), so every repository, mirror path, token and redirect of one blob from one registry is one
 * task, while a digest registered at another origin is another task (its pieces are never served as this one's).
 * Any other URL is keyed on its canonical form, with the explicit digest if one is given.
 */
export function taskIdFor(url: URL, digest?: string): string {
  const blob = blobDigestOf(url);
  const key = blob !== undefined ? `${digest ?? blob}\0${url.protocol}//${url.host}` : `${digest ?? ''}\0${canonicalUrl(url)}`;
  return createHash('sha256').update(key).digest('hex');
}

/**
 * The digest a download must match: the explicit one, or the one a registry blob URL names. Both given and different
 * is a caller mistake, reported as BAD_DIGEST rather than fetched and failed.
 */
export function checkDigest(url: URL, digest: string | undefined): string | undefined {
  const fromUrl = blobDigestOf(url);
  if (digest !== undefined) {
    parseDigest(digest);
    if (fromUrl && fromUrl !== digest) throw sharedError('BAD_DIGEST', `${digest} conflicts with the URL's ${fromUrl}`);
  }
  return digest ?? fromUrl;
}

export const TASK_ID_RE = /^[a-f0-9]{64}$/;
