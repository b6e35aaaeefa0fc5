/**
 * Cluster membership, from one shared secret:
 *
 * - a **session proof** a peer sends when it opens its control channel (`x-damselfly-auth`): an HMAC over its peer id,
 *   a timestamp and a nonce, so the secret itself never crosses the wire and a captured proof cannot be replayed
 *   (the supernode remembers nonces for the proof's lifetime);
 * - **piece grants** the supernode puts into each assignment (`x-damselfly-grant`): an HMAC over (task, piece,
 *   requester, expiry), checked by upload servers and the supernode's piece API, so a piece goes only to whom the
 *   supernode scheduled it, and only for a short while;
 * - the **operator token** for the REST API: `Authorization: Bearer <secret>`.
 *
 * Everything is checked in constant time. Without a secret (loopback-only or explicitly insecure deployments) none of
 * this applies.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { errorFactory, type ErrorTable } from './errors.js';

export const AuthErrors = {
  AUTH_REQUIRED: { message: 'cluster authentication required: %s', status: 401 },
  AUTH_INVALID: { message: 'cluster authentication failed: %s', status: 401 },
  GRANT_INVALID: { message: 'no valid piece grant: %s', status: 403 },
} as const satisfies ErrorTable<string>;

export const authError = errorFactory(AuthErrors);

export const AUTH_HEADER = 'x-damselfly-auth';
export const GRANT_HEADER = 'x-damselfly-grant';

/** A session proof is accepted this far from the supernode's clock, either way. */
export const PROOF_SKEW_MS = 120_000;
/** Grants live long enough for one piece transfer with its timeout, and no longer. */
export const GRANT_TTL_MS = 120_000;
/** Shortest secret accepted (bytes of text): shorter ones are guessable. */
export const MIN_SECRET_LENGTH = 16;

function mac(secret: Buffer, ...parts: string[]): string {
  const h = createHmac('sha256', secret);
  for (const p of parts) h.update(p).update('\0');
  return h.digest('base64url');
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** `peer=<id>;ts=<ms>;nonce=<hex>;mac=<b64url>` for the control channel's upgrade request. */
export function sessionProof(secret: Buffer, peerId: string, now = Date.now()): string {
  const nonce = randomBytes(16).toString('hex');
  const ts = String(now);
  return `peer=${encodeURIComponent(peerId)};ts=${ts};nonce=${nonce};mac=${mac(secret, 'session', peerId, ts, nonce)}`;
}

/** Why a proof's nonce was not taken. */
export type NonceRefusal = 'replayed' | 'full' | 'source_full';

/**
 * Nonces seen within the proof window: a replayed proof is refused. Bounded by time, then by count, and per source
 * address to a tenth of the count: a member minting proofs from one host (the secret lets it make any) fills its own
 * share, not the cache every other host's new sessions need.
 */
export class NonceCache {
  readonly #seen = new Map<string, { expires: number; source?: string }>();
  readonly #bySource = new Map<string, number>();
  readonly #max: number;
  readonly #perSource: number;
  constructor(max = 100_000) {
    this.#max = max;
    this.#perSource = Math.max(1, Math.floor(max / 10));
  }
  /** Takes `nonce`, or says why not: seen before, or no room for live nonces (refused rather than grown). */
  add(nonce: string, expires: number, now = Date.now(), source?: string): true | NonceRefusal {
    if (this.#seen.has(nonce)) return 'replayed';
    const fromSource = () => (source === undefined ? 0 : (this.#bySource.get(source) ?? 0));
    if (this.#seen.size >= this.#max || fromSource() >= this.#perSource) {
      this.#sweep(now);
      if (this.#seen.size >= this.#max) return 'full';
      if (fromSource() >= this.#perSource) return 'source_full';
    }
    this.#seen.set(nonce, { expires, source });
    if (source !== undefined) this.#bySource.set(source, fromSource() + 1);
    return true;
  }

  #sweep(now: number): void {
    for (const [k, e] of this.#seen) {
      if (e.expires >= now) continue;
      this.#seen.delete(k);
      if (e.source === undefined) continue;
      const left = (this.#bySource.get(e.source) ?? 1) - 1;
      if (left > 0) this.#bySource.set(e.source, left);
      else this.#bySource.delete(e.source);
    }
  }
}

/** Checks a session proof; returns the authenticated peer id or throws AUTH_REQUIRED / AUTH_INVALID. */
export function verifySessionProof(secret: Buffer, header: string | undefined, nonces: NonceCache, now = Date.now(), source?: string): string {
  if (!header) throw authError('AUTH_REQUIRED', `send ${AUTH_HEADER} (set the cluster secret on this peer)`);
  const fields = new Map<string, string>();
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i > 0) fields.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
  }
  const peerRaw = fields.get('peer');
  const ts = fields.get('ts');
  const nonce = fields.get('nonce');
  const got = fields.get('mac');
  if (!peerRaw || !ts || !/^\d{1,16}$/.test(ts) || !nonce || !/^[a-f0-9]{16,64}$/.test(nonce) || !got) {
    throw authError('AUTH_INVALID', 'malformed proof');
  }
  let peerId: string;
  try {
    peerId = decodeURIComponent(peerRaw);
  } catch {
    throw authError('AUTH_INVALID', 'malformed peer id');
  }
  if (!sameText(got, mac(secret, 'session', peerId, ts, nonce))) throw authError('AUTH_INVALID', 'wrong secret');
  if (Math.abs(now - Number(ts)) > PROOF_SKEW_MS) throw authError('AUTH_INVALID', 'proof expired (check the clocks)');
  const taken = nonces.add(nonce, Number(ts) + PROOF_SKEW_MS, now, source);
  if (taken === 'replayed') throw authError('AUTH_INVALID', 'proof replayed');
  if (taken !== true) throw authError('AUTH_INVALID', `too many new sessions ${taken === 'source_full' ? 'from this address' : 'at once'} in the last minutes: try again shortly`);
  return peerId;
}

export interface GrantScope {
  taskId: string;
  piece: number;
  requester: string;
}

/** A grant for one piece of one task to one requester: `<expiry ms>.<requester, b64url>.<mac>`. */
export function issueGrant(secret: Buffer, g: GrantScope, now = Date.now(), ttlMs = GRANT_TTL_MS): string {
  const exp = String(now + ttlMs);
  const who = Buffer.from(g.requester).toString('base64url');
  return `${exp}.${who}.${mac(secret, 'grant', g.taskId, String(g.piece), g.requester, exp)}`;
}

/** Checks a grant against the piece actually requested; returns the requester it was issued to. */
export function verifyGrant(secret: Buffer, grant: string | undefined, taskId: string, piece: number, now = Date.now()): string {
  if (!grant) throw authError('GRANT_INVALID', `missing ${GRANT_HEADER}`);
  const [exp, who, got, extra] = grant.split('.');
  if (!exp || !/^\d{1,16}$/.test(exp) || who === undefined || !got || extra !== undefined) throw authError('GRANT_INVALID', 'malformed');
  const requester = Buffer.from(who, 'base64url').toString();
  if (!sameText(got, mac(secret, 'grant', taskId, String(piece), requester, exp))) throw authError('GRANT_INVALID', 'not issued for this piece');
  if (Number(exp) < now) throw authError('GRANT_INVALID', 'expired');
  return requester;
}

/**
 * The operator token: what the operator REST API, the dashboard and /metrics want as `Authorization: Bearer`. Derived
 * from the cluster secret, one way, so the secret itself never travels as a header (a scraper over plain HTTP, the
 * copy Prometheus keeps of its credentials): whoever sees the token can read metrics and ask for preheats, not act as
 * a member (session proofs and grants are keyed by the secret). sha256 rather than an HMAC so the Helm chart can
 * compute it for its ServiceMonitor (`sha256sum` in a template): `sha256("damselfly-operator:" + secret)`, hex.
 */
export function operatorToken(secret: Buffer): string {
  return createHash('sha256').update('damselfly-operator:').update(secret).digest('hex');
}

/** The token of `Authorization: Bearer <token>`; without one, AUTH_REQUIRED saying `missing` (which token, from where). */
function bearer(authorization: string | undefined, missing: string): string {
  const m = /^Bearer\s+(.+)$/i.exec(authorization ?? '');
  if (!m) throw authError('AUTH_REQUIRED', missing);
  return m[1]!.trim();
}

/** `Authorization: Bearer <operator token>` for the operator REST API. */
export function verifyOperatorToken(secret: Buffer, authorization: string | undefined): void {
  const got = bearer(authorization, 'send Authorization: Bearer <operator token> (dfctl token prints it)');
  if (!sameText(got, operatorToken(secret))) throw authError('AUTH_INVALID', 'wrong token (the operator token, not the cluster secret: dfctl token prints it)');
}

/**
 * The metrics token: what a scraper sends for `/metrics` and nothing else, `sha256("damselfly-metrics:" + secret)`
 * (hex). Scrapers reach every node, where a listener on a node's port proves nothing about who holds it: the token
 * they carry there reads metrics and cannot ask the supernode for anything (the operator token can: preheats).
 */
export function metricsToken(secret: Buffer): string {
  return createHash('sha256').update('damselfly-metrics:').update(secret).digest('hex');
}

/**
 * `Authorization: Bearer <metrics token>` for `/metrics`; with `operator`, the operator token is taken too (the
 * supernode's, where it is the operator's own credential anyway). A dfdaemon refuses it: it is not for nodes.
 */
export function verifyMetricsToken(secret: Buffer, authorization: string | undefined, { operator = false }: { operator?: boolean } = {}): void {
  const got = bearer(authorization, 'send Authorization: Bearer <metrics token> (dfctl token --metrics prints it)');
  if (sameText(got, metricsToken(secret)) || (operator && sameText(got, operatorToken(secret)))) return;
  throw authError('AUTH_INVALID', `wrong token (the metrics token${operator ? ' or the operator token' : ''}, not the cluster secret: dfctl token --metrics prints it)`);
}
