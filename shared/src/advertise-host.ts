import { networkInterfaces } from 'node:os';

/**
 * The address other hosts should use for a server bound to `host`: that host itself, or for a wildcard bind the first
 * non-internal IPv4 address (loopback only on a machine with nothing else), never 127.0.0.1 on a machine that has a
 * network: an upload server announced as loopback sends every other host's requests to itself. An explicit
 * `advertiseUrl` overrides it (NAT, several interfaces, a Service name).
 */
export function advertiseHost(host: string): string {
  if (host !== '0.0.0.0' && host !== '::') return host.includes(':') ? `[${host}]` : host;
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}
