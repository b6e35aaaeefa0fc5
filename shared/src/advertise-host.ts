import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';

/**
 * The address other hosts should use for a server bound to `host`: that host itself, or for a wildcard bind the first
 * non-internal IPv4 address (an IPv6 one on a host that has no IPv4 address; loopback only on a machine with nothing
 * else), never 127.0.0.1 on a machine that has a network: an upload server announced as loopback sends every other
 * host's requests to itself. An explicit `advertiseUrl` overrides it (NAT, several interfaces, a Service name).
 * `interfaces` is the machine's (os.networkInterfaces()) unless given.
 */
export function advertiseHost(host: string, interfaces: NodeJS.Dict<NetworkInterfaceInfo[]> = networkInterfaces()): string {
  if (host !== '0.0.0.0' && host !== '::') return host.includes(':') ? `[${host}]` : host;
  const external = Object.values(interfaces).flatMap((list) => list ?? []).filter((a) => !a.internal);
  const v4 = external.find((a) => a.family === 'IPv4');
  if (v4) return v4.address;
  // Link-local IPv6 needs a zone to be reachable: a global (or unique local) address is what other hosts can use.
  const v6 = external.find((a) => a.family === 'IPv6' && !a.address.toLowerCase().startsWith('fe80:'));
  return v6 ? `[${v6.address}]` : '127.0.0.1';
}
