/**
 * "Would the origin give this object to this client?", asked of the origin itself with the client's own credentials:
 * a HEAD of a registry blob (a GET of its first byte for any other URL, since signed URLs are signed for GET), with
 * the registry token dance done the way a client does it (Bearer challenge → token endpoint with the client's Basic
 * credentials, or anonymously → retry with the token). A redirect counts as a yes: the registry hands the object out.
 */
import { request, type Dispatcher } from 'undici';
import { blobDigestOf } from './task-id.js';
import { discard } from './abort.js';
import { firstHeader, originError, redactUrl } from './origin.js';
import { originRequestHeaders } from './origin-headers.js';

export type AccessAnswer = { ok: true; requests: number } | { ok: false; status: number; wwwAuthenticate?: string; requests: number };

export interface Challenge {
  realm: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="…",service="…",scope="…"`. */
export function parseBearerChallenge(header: string | undefined): Challenge | undefined {
  if (!header || !/^\s*bearer\s/i.test(header)) return undefined;
  const params: Record<string, string> = {};
  for (const m of header.replace(/^\s*bearer\s+/i, '').matchAll(/([a-z_]+)\s*=\s*(?:"([^"]*)"|([^,\s]*))/gi)) {
    params[m[1]!.toLowerCase()] = m[2] ?? m[3] ?? '';
  }
  const realm = params.realm;
  if (!realm) return undefined;
  delete params.realm;
  return { realm, params };
}

export interface AccessRequest {
  url: URL;
  /** The client's headers for the origin (Authorization, Cookie…). */
  headers: Record<string, string>;
  /** Must not follow redirects on its own (a 3xx is the answer). */
  dispatcher: Dispatcher;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** One request of the check, never following a redirect (a 3xx is an answer). */
function send(req: TokenRequest, url: URL, method: 'GET' | 'HEAD', headers: Record<string, string>) {
  return request(url, {
    method,
    headers,
    dispatcher: req.dispatcher,
    signal: req.signal,
    headersTimeout: req.timeoutMs ?? 15_000,
    bodyTimeout: req.timeoutMs ?? 15_000,
    maxRedirections: 0,
  } as Parameters<typeof request>[1]);
}

async function ask(req: AccessRequest, authorization: string | undefined) {
  const blob = blobDigestOf(req.url) !== undefined;
  const headers = originRequestHeaders(req.headers);
  delete headers.authorization;
  if (authorization) headers.authorization = authorization;
  if (!blob) headers.range = 'bytes=0-0';
  try {
    const res = await send(req, req.url, blob ? 'HEAD' : 'GET', headers);
    discard(res.body);
    return res;
  } catch (err) {
    if (req.signal?.aborted) throw err;
    throw originError('ORIGIN_UNREACHABLE', `${redactUrl(req.url.href)}: ${(err as Error).message}`, err);
  }
}

/** How a token request goes out: the caller's dispatcher, cancellation and time limit. */
export type TokenRequest = Pick<AccessRequest, 'dispatcher' | 'signal' | 'timeoutMs'>;

/**
 * Fetches a registry token for `challenge` (a client's token dance), with the caller's credentials (`authorization`,
 * typically Basic) or anonymously; undefined if refused or unreachable. `scope` is asked for when the challenge names
 * none. `registry`: the URL that sent the challenge; credentials for an https registry never go to a plain-http token
 * endpoint (it would read them off the wire), which is asked anonymously instead.
 */
export async function fetchRegistryToken(req: TokenRequest, challenge: Challenge, authorization: string | undefined, scope?: string, registry?: URL): Promise<string | undefined> {
  let realm: URL;
  try {
    realm = new URL(challenge.realm);
  } catch {
    return undefined;
  }
  if (realm.protocol !== 'https:' && realm.protocol !== 'http:') return undefined;
  if (registry?.protocol === 'https:' && realm.protocol === 'http:') authorization = undefined;
  for (const [k, v] of Object.entries(challenge.params)) if (k === 'service' || k === 'scope') realm.searchParams.set(k, v);
  if (scope && !realm.searchParams.has('scope')) realm.searchParams.set('scope', scope);
  try {
    const res = await send(req, realm, 'GET', authorization ? { authorization } : {});
    if (res.statusCode !== 200) {
      discard(res.body);
      return undefined;
    }
    const text = (await res.body.text()).slice(0, 1 << 16);
    const body = JSON.parse(text) as { token?: unknown; access_token?: unknown };
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : undefined;
    return token || undefined;
  } catch (err) {
    if (req.signal?.aborted) throw err;
    return undefined;
  }
}

/**
 * Asks the origin whether it would serve `url` to a client with these headers. A 5xx or unreachable origin is an
 * error (the caller fails closed), never a yes.
 */
export async function checkOriginAccess(req: AccessRequest): Promise<AccessAnswer> {
  const auth = Object.entries(req.headers).find(([k]) => k.toLowerCase() === 'authorization')?.[1];
  let requests = 1;
  let res = await ask(req, auth);
  if (res.statusCode === 401 && (!auth || /^basic\s/i.test(auth))) {
    // The token dance a registry client does: the Bearer challenge names the token endpoint and scope.
    const challenge = parseBearerChallenge(firstHeader(res.headers, 'www-authenticate'));
    if (challenge) {
      requests++;
      const token = await fetchRegistryToken(req, challenge, auth, undefined, req.url);
      if (token) {
        requests++;
        res = await ask(req, `Bearer ${token}`);
      }
    }
  }
  const status = res.statusCode;
  if (status >= 200 && status < 400) return { ok: true, requests };
  if (status === 401 || status === 403 || status === 404) return { ok: false, status, wwwAuthenticate: firstHeader(res.headers, 'www-authenticate'), requests };
  throw originError('ORIGIN_BAD_STATUS', `${status} for ${redactUrl(req.url.href)} (access check)`);
}
