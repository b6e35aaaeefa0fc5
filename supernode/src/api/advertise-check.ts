/**
 * Whether a peer may advertise an upload base: it must be `scheme://host:port` (nothing a downloader could be made
 * to request beyond the piece path it builds itself), and the host must be the address the peer's session comes
 * from, or in a range the operator allowed (NAT, a separate data network).
 */
import { lookup } from 'node:dns/promises';
import { isIP, type BlockList } from 'node:net';
import { networkInterfaces } from 'node:os';
import { inList, isDamselflyError, isLoopbackHost, unmapAddress, uploadBase } from '@damselfly/shared';
import { snError } from '../errors.js';

/**
 * Longest a hello waits for its advertised name to resolve. The name is the peer's choice and the system resolver
 * has no deadline of its own a caller can set: without one, a name that never answers holds the hello for as long as
 * the resolver retries.
 */
export const ADVERTISE_LOOKUP_MS = 3_000;

/** Every address `host` resolves to (the system resolver, as connections to it would use). */
async function lookupAll(host: string): Promise<string[]> {
  return (await lookup(host, { all: true })).map((a) => a.address);
}

export async function checkAdvertisedBase(
  raw: string,
  remoteAddress: string | undefined,
  allowed: BlockList,
  { signal, deadlineMs = ADVERTISE_LOOKUP_MS, resolve = lookupAll }: { signal?: AbortSignal; deadlineMs?: number; resolve?: (host: string) => Promise<string[]> } = {},
): Promise<string> {
  const base = uploadBase(raw);
  if (!base) throw snError('SN_BAD_ADVERTISE', `${JSON.stringify(raw.slice(0, 200))} (want scheme://host:port and nothing else)`);
  const host = new URL(base).hostname.replace(/^\[|\]$/g, '');
  const remote = remoteAddress ? unmapAddress(remoteAddress) : undefined;
  const literal = isIP(unmapAddress(host)) !== 0;
  const addresses = literal ? [unmapAddress(host)] : (await resolveWithin(host, resolve, deadlineMs, signal)).map(unmapAddress);
  // A session over loopback comes from this very host: any address of this host's is its own (an all-in-one node
  // talks to its supernode over 127.0.0.1 but advertises its interface address to other nodes).
  const own = remote && isLoopbackHost(remote) ? ownAddresses() : new Set<string>();
  const checked = addresses.find((a) => a === remote) ?? addresses.find((a) => inList(allowed, a)) ?? addresses.find((a) => own.has(a));
  // A name is handed on as the address it was checked at: one of its other addresses, or a new answer by the time a
  // downloader resolves it (rebinding), could point anywhere. An address literal is handed on as given.
  if (checked) return literal ? base : withHost(base, checked);
  throw snError('SN_BAD_ADVERTISE', `${host} is not this session's address (${remote ?? 'unknown'}); allow it with advertiseCidrs`);
}

function withHost(base: string, address: string): string {
  const u = new URL(base);
  u.hostname = isIP(address) === 6 ? `[${address}]` : address;
  return u.origin;
}

/**
 * `resolve(host)`, given up on past `ms` or when `signal` aborts. A lookup cannot be cancelled (it keeps its
 * thread until the resolver is done), but the hello waiting on it is answered. The timer is held here and cleared
 * when either side wins; not AbortSignal.timeout inside AbortSignal.any, whose timer can be collected before it fires
 * (nodejs/node#57736).
 */
async function resolveWithin(host: string, resolve: (host: string) => Promise<string[]>, ms: number, signal?: AbortSignal): Promise<string[]> {
  signal?.throwIfAborted();
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const given = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(snError('SN_BAD_ADVERTISE', `${host} did not resolve within ${ms} ms`)), ms);
    onAbort = () => reject(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([resolve(host), given]);
  } catch (err) {
    if (isDamselflyError(err, 'SN_BAD_ADVERTISE') || signal?.aborted) throw err;
    throw snError('SN_BAD_ADVERTISE', `${host} does not resolve`);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}

function ownAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(unmapAddress(a.address));
  return out;
}
