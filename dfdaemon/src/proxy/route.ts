/**
 * The one place that decides, per request, where it goes and how: the upstream URL (forward-proxy absolute URL, or a
 * registry-mirror path with its registry from `?ns=`, `X-Dragonfly-Registry` or the default), whether the host is
 * allowed, and whether it goes P2P (blob GETs) or straight through (everything else).
 */
import type { IncomingMessage } from 'node:http';
import { parseHttpUrl } from '@damselfly/shared';
import { dfError } from '../errors.js';

const BLOB_PATH = /^\/v2\/.+\/blobs\/sha256:[a-f0-9]{64}$/;

export interface Route {
  url: URL;
  /** P2P download, or pass through to the upstream unchanged. */
  mode: 'p2p' | 'direct';
  /** Mirror (origin-form) or forward proxy (absolute-form). */
  kind: 'mirror' | 'proxy';
}

export interface RoutePolicy {
  registries: readonly string[];
  proxyHosts: readonly string[];
}

export function allowedHosts(p: RoutePolicy): { any: boolean; hosts: Set<string> } {
  const hosts = new Set<string>();
  for (const r of p.registries) hosts.add(new URL(r).host);
  for (const h of p.proxyHosts) hosts.add(h);
  return { any: hosts.has('*'), hosts };
}

export function route(req: IncomingMessage, policy: RoutePolicy, allowed = allowedHosts(policy)): Route {
  const raw = req.url ?? '/';
  let url: URL;
  let kind: Route['kind'];
  if (/^https?:\/\//i.test(raw)) {
    url = parseHttpUrl(raw);
    kind = 'proxy';
  } else if (raw.startsWith('/v2/') || raw === '/v2') {
    const local = new URL(raw, 'http://mirror.local');
    const ns = local.searchParams.get('ns');
    local.searchParams.delete('ns');
    const header = req.headers['x-dragonfly-registry'];
    let base: string | undefined;
    if (typeof header === 'string' && header) base = header;
    else if (ns) {
      // containerd names Docker Hub "docker.io"; its registry API lives at registry-1.docker.io.
      const host = ns === 'docker.io' ? 'registry-1.docker.io' : ns;
      base = policy.registries.find((r) => new URL(r).host === host) ?? `https://${host}`;
    }
    else base = policy.registries[0];
    if (!base) throw dfError('DF_NO_REGISTRY', local.pathname);
    url = parseHttpUrl(base.replace(/\/$/, '') + local.pathname + local.search);
    kind = 'mirror';
  } else {
    throw dfError('DF_PROXY_UNSUPPORTED', `${req.method} ${raw.slice(0, 200)} (send /v2/... as a registry mirror, or an absolute URL as a forward proxy)`);
  }
  // A client that can only speak plain HTTP to its proxy (nydusd with use_http) asks for http:// URLs of registries
  // that are https, and a mirror client may name one as http:// in X-Dragonfly-Registry: a registry configured as
  // https is reached as https, never downgraded (its client's credentials would cross the network in clear).
  if (url.protocol === 'http:' && policy.registries.some((r) => r.startsWith('https://') && new URL(r).host === url.host)) url.protocol = 'https:';
  if (!allowed.any && !allowed.hosts.has(url.host)) throw dfError('DF_PROXY_FORBIDDEN', url.host);
  const useP2P = req.headers['x-dragonfly-use-p2p'] !== 'false';
  const isBlob = BLOB_PATH.test(url.pathname);
  // Registry paths other than blobs (manifests, tags, tokens, uploads) are small or stateful: straight through.
  const p2p = useP2P && req.method === 'GET' && (isBlob || (kind === 'proxy' && !url.pathname.startsWith('/v2/')));
  return { url, mode: p2p ? 'p2p' : 'direct', kind };
}
