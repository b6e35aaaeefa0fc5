/**
 * Which origins a supernode may seed from, as the operator wrote them:
 * `https://registry.example.com` (scheme, host and port must match), `registry.example.com:5000` (any scheme),
 * `registry.example.com` (any scheme, any port), `*.example.com` (any subdomain), `*` (anything, still subject to the
 * address policy).
 */
export interface OriginPattern {
  scheme?: 'http:' | 'https:';
  /** Lower-case host name or IP (IPv6 in brackets), or a `*.suffix` wildcard. */
  host: string;
  port?: string;
}

const DEFAULT_PORT: Record<string, string> = { 'http:': '80', 'https:': '443' };

export function parseOriginPattern(raw: string): OriginPattern | undefined {
  const s = raw.trim().toLowerCase().replace(/\/+$/, '');
  if (s === '*') return { host: '*' };
  const withScheme = /^(https?):\/\/(.+)$/.exec(s);
  const rest = withScheme ? withScheme[2]! : s;
  if (/[/?#@\s]/.test(rest) || rest === '') return undefined;
  let u: URL;
  try {
    u = new URL(`http://${rest.replace(/^\*\./, 'wildcard.')}`);
  } catch {
    return undefined;
  }
  const host = rest.startsWith('*.') ? `*.${u.hostname.slice('wildcard.'.length)}` : u.hostname;
  const explicitPort = /:(\d+)$/.test(rest);
  const scheme = withScheme ? (`${withScheme[1]}:` as 'http:' | 'https:') : undefined;
  const port = explicitPort ? u.port || '80' : scheme ? DEFAULT_PORT[scheme] : undefined;
  return { scheme, host, port };
}

/** Patterns that do not parse, for config validation. */
export function badOriginPatterns(list: readonly string[]): string[] {
  return list.filter((p) => !parseOriginPattern(p));
}

export class OriginAllowList {
  readonly #patterns: OriginPattern[];
  constructor(patterns: readonly string[]) {
    this.#patterns = patterns.map(parseOriginPattern).filter((p): p is OriginPattern => !!p);
  }
  get empty(): boolean {
    return this.#patterns.length === 0;
  }
  allows(url: URL): boolean {
    const host = url.hostname.toLowerCase();
    const port = url.port || DEFAULT_PORT[url.protocol] || '';
    return this.#patterns.some((p) => {
      if (p.host === '*') return true;
      if (p.scheme && p.scheme !== url.protocol) return false;
      if (p.port && p.port !== port) return false;
      if (p.host.startsWith('*.')) return host.endsWith(p.host.slice(1)) && host.length > p.host.length - 1;
      return p.host === host;
    });
  }
}
