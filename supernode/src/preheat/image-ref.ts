/**
 * An image reference as operators write it: `registry.example.com[:port]/repo/name[:tag][@sha256:…]` (with both, the
 * digest is what is pulled), optionally with
 * the scheme in front (`http://127.0.0.1:5000/team/app:1.0` for a plain-HTTP registry; https otherwise). Docker Hub
 * shorthand (`alpine`, `library/alpine`, `docker.io/…`) maps to registry-1.docker.io.
 */
import { snError } from '../errors.js';

export interface ImageRef {
  /** `scheme://host[:port]` of the registry's API. */
  registry: string;
  repository: string;
  /** A tag or a `sha256:` digest. */
  reference: string;
}

const REPO = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;

export function parseImageRef(input: string): ImageRef {
  const bad = () => snError('SN_BAD_IMAGE', JSON.stringify(input.slice(0, 300)));
  let rest = input.trim();
  let scheme = 'https';
  const m = /^(https?):\/\//.exec(rest);
  if (m) {
    scheme = m[1]!;
    rest = rest.slice(m[0].length);
  }
  let reference = 'latest';
  const at = rest.indexOf('@');
  if (at >= 0) {
    reference = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(reference)) throw bad();
  }
  const slash = rest.indexOf('/');
  let host = 'registry-1.docker.io';
  // The first component is a registry if it looks like a host (a dot, a port, or localhost); else Docker Hub.
  if (slash > 0 && /[.:]|^localhost$/.test(rest.slice(0, slash))) {
    host = rest.slice(0, slash);
    rest = rest.slice(slash + 1);
  } else if (m) throw bad();
  if (host.toLowerCase() === 'docker.io') host = 'registry-1.docker.io';
  // `name:tag@sha256:…` (a tag pinned to its digest, as many manifests write it): the digest is what is pulled.
  const colon = rest.lastIndexOf(':');
  if (colon > 0) {
    const tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad();
    if (at < 0) reference = tag;
  }
  if (host === 'registry-1.docker.io' && !rest.includes('/')) rest = `library/${rest}`;
  if (!REPO.test(rest)) throw bad();
  try {
    const u = new URL(`${scheme}://${host}`);
    return { registry: u.origin, repository: rest, reference };
  } catch {
    throw bad();
  }
}
