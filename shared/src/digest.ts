import { createHash } from 'node:crypto';
import { sharedError } from './errors.js';

const DIGEST_RE = /^sha256:([a-f0-9]{64})$/;

/** An OCI content digest; only sha256 is supported (the algorithm every registry uses). */
export interface Digest {
  readonly algorithm: 'sha256';
  readonly hex: string;
}

export function parseDigest(s: string): Digest {
  const m = DIGEST_RE.exec(s);
  if (!m) throw sharedError('BAD_DIGEST', JSON.stringify(s));
  return { algorithm: 'sha256', hex: m[1]! };
}

export function formatDigest(d: Digest): string {
  return `${d.algorithm}:${d.hex}`;
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
