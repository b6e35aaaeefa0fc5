/**
 * Whether a peer may advertise an upload base: it must be `scheme://host:port` (nothing a downloader could be made
 * to request beyond the piece path it builds itself), and the host must be the address the peer's session comes
 * from, or in a range the operator allowed (NAT, a separate data network).
 */
import { lookup } from 'node:dns/promises';
import { isIP, type BlockList } from 'node:net';
import { networkInterfaces } from 'node:os';
import { inList, isLoopbackHost, unmapAddress, uploadBase } from '@damselfly/shared';
import { snError } from '../errors.js';

export async function checkAdvertisedBase(raw: string, remoteAddress: string | undefined, allowed: BlockList): Promise<string> {
  const base = uploadBase(raw);
  if (!base) throw snError('SN_BAD_ADVERTISE', `${JSON.stringify(raw.slice(0, 200))} (want scheme://host:port and nothing else)`);
  const host = new URL(base).hostname.replace(/^\[|\]$/g, '');
  const remote = remoteAddress ? unmapAddress(remoteAddress) : undefined;
  let addresses: string[];
  if (isIP(unmapAddress(host))) addresses = [unmapAddress(host)];
  else {
    try {
      addresses = (await lookup(host, { all: true })).map((a) => unmapAddress(a.address));
    } catch {
      throw snError('SN_BAD_ADVERTISE', `${host} does not resolve`);
    }
  }
  if (addresses.some((a) => a === remote || inList(allowed, a))) return base;
  // A session over loopback comes from this very host: any address of this host's is its own (an all-in-one node
  // talks to its supernode over 127.0.0.1 but advertises its interface address to other nodes).
  if (remote && isLoopbackHost(remote) && addresses.some((a) => ownAddresses().has(a))) return base;
  throw snError('SN_BAD_ADVERTISE', `${host} is not this session's address (${remote ?? 'unknown'}); allow it with advertiseCidrs`);
}

function ownAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(unmapAddress(a.address));
  return out;
}
