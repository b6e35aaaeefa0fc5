/**
 * Where a server that fetches on others' behalf may connect. The check runs at connect time on the address actually
 * dialled: after DNS resolution (so a name that resolves to 127.0.0.1, or re-resolves there later, is caught) and on
 * every redirect hop (undici's redirect interceptor opens each hop through the same connector). URL spellings of
 * loopback (`0x7f000001`, `2130706433`, `[::ffff:127.0.0.1]`) are normalised by the URL parser or here before the
 * check, so they are caught too.
 */
import { BlockList, isIP } from 'node:net';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { buildConnector, type Dispatcher } from 'undici';
import { errorFactory, type ErrorTable } from './errors.js';

export const NetGuardErrors = {
  ADDRESS_FORBIDDEN: { message: 'refusing to connect to %s (loopback, private, link-local and metadata addresses are off limits; allow a range with originAllowCidrs)', status: 403 },
  BAD_CIDR: { message: 'not a CIDR: %s', status: 400 },
} as const satisfies ErrorTable<string>;

export const netGuardError = errorFactory(NetGuardErrors);

/** Ranges never fetched from by default: loopback, private, CGNAT, link-local (cloud metadata), multicast, reserved. */
const DENIED: readonly [string, number, 'ipv4' | 'ipv6'][] = [
  ['0.0.0.0', 8, 'ipv4'],
  ['10.0.0.0', 8, 'ipv4'],
  ['100.64.0.0', 10, 'ipv4'],
  ['127.0.0.0', 8, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'],
  ['172.16.0.0', 12, 'ipv4'],
  ['192.0.0.0', 24, 'ipv4'],
  ['192.168.0.0', 16, 'ipv4'],
  ['198.18.0.0', 15, 'ipv4'],
  ['224.0.0.0', 3, 'ipv4'],
  ['::', 128, 'ipv6'],
  ['::1', 128, 'ipv6'],
  ['64:ff9b::', 96, 'ipv6'],
  ['fc00::', 7, 'ipv6'],
  ['fe80::', 10, 'ipv6'],
  ['ff00::', 8, 'ipv6'],
];

/** An IPv4-mapped IPv6 address (`::ffff:7f00:1`, `::ffff:127.0.0.1`) as the IPv4 address it is. */
export function unmapAddress(addr: string): string {
  const a = addr.replace(/^\[|\]$/g, '').toLowerCase();
  const dotted = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (dotted) return dotted[1]!;
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(a);
  if (hex) {
    const hi = parseInt(hex[1]!, 16);
    const lo = parseInt(hex[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return a;
}

/** Parses `a.b.c.d/n` or `v6::/n` (a bare address is a /32 or /128) into a BlockList; throws BAD_CIDR. */
export function cidrList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const c of cidrs) {
    const [addr = '', bits] = c.trim().split('/');
    const a = unmapAddress(addr);
    const family = isIP(a);
    if (!family) throw netGuardError('BAD_CIDR', JSON.stringify(c));
    const max = family === 4 ? 32 : 128;
    const n = bits === undefined ? max : Number(bits);
    if (!Number.isInteger(n) || n < 0 || n > max) throw netGuardError('BAD_CIDR', JSON.stringify(c));
    list.addSubnet(a, n, family === 4 ? 'ipv4' : 'ipv6');
  }
  return list;
}

/** Invalid CIDRs in a list, for config validation. */
export function badCidrs(cidrs: readonly string[]): string[] {
  return cidrs.filter((c) => {
    try {
      cidrList([c]);
      return false;
    } catch {
      return true;
    }
  });
}

export function inList(list: BlockList, addr: string): boolean {
  const a = unmapAddress(addr);
  const family = isIP(a);
  return family !== 0 && list.check(a, family === 4 ? 'ipv4' : 'ipv6');
}

export class AddressPolicy {
  readonly #denied = new BlockList();
  readonly #allowed: BlockList;
  constructor(allowCidrs: readonly string[] = []) {
    for (const [a, n, f] of DENIED) this.#denied.addSubnet(a, n, f);
    this.#allowed = cidrList(allowCidrs);
  }
  /** True if an origin at this address may be fetched from. */
  permits(addr: string): boolean {
    const a = unmapAddress(addr);
    if (!isIP(a)) return false;
    return inList(this.#allowed, a) || !inList(this.#denied, a);
  }
}

/** A `dns.lookup` for sockets that answers only with addresses `policy` permits (ADDRESS_FORBIDDEN if none). */
export function guardedLookup(policy: AddressPolicy) {
  return (hostname: string, options: object, cb: (err: Error | null, address: string | LookupAddress[], family?: number) => void): void => {
    dnsLookup(hostname, { all: true }, (err, addresses) => {
      if (err) return cb(err, []);
      const ok = addresses.filter((a) => policy.permits(a.address));
      if (!ok.length) return cb(netGuardError('ADDRESS_FORBIDDEN', `${hostname} (${addresses.map((a) => a.address).join(', ')})`), []);
      if ((options as { all?: boolean }).all) cb(null, ok);
      else cb(null, ok[0]!.address, ok[0]!.family);
    });
  };
}

/** Throws ADDRESS_FORBIDDEN for an IP-literal host `policy` does not permit (names are checked by guardedLookup). */
export function refuseForbiddenLiteral(policy: AddressPolicy, hostname: string): void {
  const host = hostname.replace(/^\[|\]$/g, '');
  if (isIP(unmapAddress(host)) && !policy.permits(host)) throw netGuardError('ADDRESS_FORBIDDEN', host);
}

/**
 * An undici `connect` function that dials only addresses `policy` permits: IP-literal hosts are checked directly,
 * names are resolved here and every answer is checked before the socket is opened to a permitted one.
 */
export function guardedConnector(policy: AddressPolicy, opts: buildConnector.BuildOptions = {}): buildConnector.connector {
  const connect = buildConnector({ ...opts, lookup: guardedLookup(policy) } as buildConnector.BuildOptions);
  return (options, callback) => {
    try {
      refuseForbiddenLiteral(policy, options.hostname);
    } catch (err) {
      callback(err as Error, null);
      return;
    }
    return connect(options, callback);
  };
}

export type { Dispatcher };
