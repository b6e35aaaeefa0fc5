/**
 * Resolves an image reference to the blobs a pull of it needs (every selected platform's config and layers), the way
 * a client does: manifests in OCI and Docker media types, an image index / manifest list narrowed to the wanted
 * platforms, the registry's Bearer token dance with the caller's own credentials (or anonymously). Manifests fetched
 * by digest are checked against it.
 */
import { createHash } from 'node:crypto';
import { request, type Dispatcher } from 'undici';
import { describeError, fetchRegistryToken, originRequestHeaders, parseBearerChallenge, redactUrl } from '@damselfly/shared';
import { snError } from '../errors.js';
import type { ImageRef } from './image-ref.js';

const INDEX_TYPES = ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json'];
const MANIFEST_TYPES = ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'];
const ACCEPT = [...INDEX_TYPES, ...MANIFEST_TYPES].join(', ');
/** Manifests are small; anything bigger is not one. */
const MAX_MANIFEST = 4 << 20;

export interface ImageBlob {
  digest: string;
  size: number;
  mediaType: string;
  /** `os/arch[/variant]` of the manifest it belongs to (absent for a single-platform image). */
  platform?: string;
  /** `config` or `layer`. */
  kind: 'config' | 'layer';
}

export interface ResolvedImage {
  /** The digest of what the reference points at (index or manifest). */
  digest: string;
  platforms: string[];
  blobs: ImageBlob[];
  /** Headers to fetch the blobs with: the caller's, or the Bearer token the dance produced. */
  headers: Record<string, string>;
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
}

const platformOf = (d: Descriptor) => [d.platform?.os, d.platform?.architecture, d.platform?.variant].filter(Boolean).join('/');

/** `linux/arm64` matches `linux/arm64/v8`: a wanted platform without a variant takes any variant. */
function platformMatches(have: string, want: string): boolean {
  return have === want || have.startsWith(`${want}/`);
}

export async function resolveImage(
  ref: ImageRef,
  opts: { platforms?: readonly string[]; headers: Record<string, string>; dispatcher: Dispatcher; signal?: AbortSignal },
): Promise<ResolvedImage> {
  let headers = originRequestHeaders(opts.headers);
  const get = async (reference: string): Promise<{ body: Buffer; type: string; digest: string }> => {
    const url = `${ref.registry}/v2/${ref.repository}/manifests/${reference}`;
    for (let attempt = 0; attempt < 2; attempt++) {
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, { headers: { ...headers, accept: ACCEPT }, dispatcher: opts.dispatcher, signal: opts.signal, headersTimeout: 30_000, bodyTimeout: 30_000 });
      } catch (err) {
        opts.signal?.throwIfAborted();
        throw snError('SN_MANIFEST', `${redactUrl(url)}: ${describeError(err)}`, err);
      }
      if (res.statusCode === 401 && attempt === 0) {
        const challenge = parseBearerChallenge(String(res.headers['www-authenticate'] ?? ''));
        await res.body.dump();
        if (!challenge) break;
        const auth = Object.entries(opts.headers).find(([k]) => k.toLowerCase() === 'authorization')?.[1];
        const token = await fetchRegistryToken({ dispatcher: opts.dispatcher, signal: opts.signal, timeoutMs: 30_000 }, challenge, auth, `repository:${ref.repository}:pull`, new URL(url));
        if (!token) throw Object.assign(snError('SN_MANIFEST', 'the registry\'s token service gave no token (refused or unreachable)'), { status: 401 });
        headers = { authorization: `Bearer ${token}` };
        continue;
      }
      if (res.statusCode !== 200) {
        await res.body.dump();
        const e = snError('SN_MANIFEST', `${redactUrl(url)} answered ${res.statusCode}`);
        throw Object.assign(e, { status: res.statusCode === 404 ? 404 : res.statusCode === 401 || res.statusCode === 403 ? res.statusCode : 502 });
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of res.body) {
        size += (c as Buffer).length;
        if (size > MAX_MANIFEST) throw snError('SN_MANIFEST', `${redactUrl(url)}: manifest over ${MAX_MANIFEST} bytes`);
        chunks.push(c as Buffer);
      }
      const body = Buffer.concat(chunks);
      const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
      if (reference.startsWith('sha256:') && digest !== reference) throw snError('SN_MANIFEST', `${redactUrl(url)}: the registry's manifest is ${digest}, not ${reference}`);
      return { body, type: String(res.headers['content-type'] ?? '').split(';')[0]!.trim(), digest };
    }
    throw snError('SN_MANIFEST', `${redactUrl(url)}: the registry refused the credentials (401)`);
  };
  const parse = (m: { body: Buffer }) => {
    try {
      return JSON.parse(m.body.toString('utf8')) as { mediaType?: string; manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
    } catch {
      throw snError('SN_MANIFEST', 'the registry sent a manifest that is not JSON');
    }
  };

  const top = await get(ref.reference);
  const doc = parse(top);
  const type = doc.mediaType ?? top.type;
  const blobs = new Map<string, ImageBlob>();
  const addManifest = (m: ReturnType<typeof parse>, platform?: string) => {
    if (!m.config || !Array.isArray(m.layers)) throw snError('SN_MANIFEST', 'a manifest without config or layers');
    for (const [d, kind] of [[m.config, 'config'], ...m.layers.map((l) => [l, 'layer'] as const)] as [Descriptor, 'config' | 'layer'][]) {
      if (typeof d.digest !== 'string' || !/^sha256:[a-f0-9]{64}$/.test(d.digest) || !Number.isSafeInteger(d.size)) throw snError('SN_MANIFEST', 'a blob descriptor without a sha256 digest and size');
      if (!blobs.has(d.digest)) blobs.set(d.digest, { digest: d.digest, size: d.size, mediaType: d.mediaType ?? '', kind, ...(platform ? { platform } : {}) });
    }
  };
  const chosen: string[] = [];
  if (INDEX_TYPES.includes(type) || Array.isArray(doc.manifests)) {
    // Attestation manifests (platform unknown/unknown) are not images anyone pulls.
    const images = (doc.manifests ?? []).filter((d) => platformOf(d) && platformOf(d) !== 'unknown/unknown');
    const wanted = opts.platforms?.length ? images.filter((d) => opts.platforms!.some((p) => platformMatches(platformOf(d), p))) : images;
    if (!wanted.length) throw snError('SN_NO_PLATFORM', `${(opts.platforms ?? []).join(', ') || 'any platform'} (it has ${images.map(platformOf).join(', ') || 'none'})`);
    for (const d of wanted) {
      addManifest(parse(await get(d.digest)), platformOf(d));
      chosen.push(platformOf(d));
    }
  } else if (MANIFEST_TYPES.includes(type) || doc.config) {
    addManifest(doc);
  } else {
    throw snError('SN_MANIFEST', `unsupported manifest type ${JSON.stringify(type)}`);
  }
  return { digest: top.digest, platforms: chosen, blobs: [...blobs.values()], headers };
}
