import { createHash } from 'node:crypto';
import { sharedError } from './errors.js';
import { parseDigest } from './digest.js';

/** Query parameters that sign or scope a URL but do not change the bytes behind it. */
const VOLATILE_PARAM = /^(x-amz-.*|x-goog-.*|expires|signature|ossaccesskeyid|ns)$/i;
const BLOB_RE = /\/blobs\/(sha256:[a-f0-9]{64})(?:$|[/?#])/;

/** Parses an http(s) URL or throws BAD_URL with the reason. */
export function parseHttpUrl(raw: string): URL {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw sharedError('BAD_URL', JSON.stringify(raw));
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw sharedError('BAD_URL', `${JSON.stringify(raw)} (only http and https are supported)`);
  }
  return u;
}

/** The OCI digest a registry blob URL names, if any. */
export function blobDigestOf(url: URL): string | undefined {
  return BLOB_RE.exec(url.pathname)?.[1];
}

/** URL with signature/scope query params removed, so signed URLs of one object share a task. */
export function canonicalUrl(url: URL): string {
  const u = new URL(url.href);
  u.hash = '';
  for (const key of [...u.searchParams.keys()]) if (VOLATILE_PARAM.test(key)) u.searchParams.delete(key);
  u.searchParams.sort();
  return u.href;
}

/**
 * Task id (see DESIGN.md): sha256 of the blob digest when the URL names one, so mirrors, tokens and redirects of
 * the same blob share a task; otherwise sha256 of the canonical URL. An explicit digest wins over the URL.
 */
export function taskIdFor(url: URL, digest?: string): string {
  const key = digest ?? blobDigestOf(url) ?? canonicalUrl(url);
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
