/**
 * TLS towards origins that do not chain to a public CA: per origin host, a CA bundle to trust (a registry with its
 * own CA) or, loudly, no verification at all. Both daemons take the same settings (the supernode seeds from the
 * origin, the dfdaemon falls back to it and checks access with it), so a CA given to one only is not a silent
 * half-configuration. Keys are `host` or `host:port`; a request to host:port uses the `host:port` entry if there is
 * one, else the `host` entry.
 */
import { readFileSync } from 'node:fs';
import { rootCertificates, type ConnectionOptions } from 'node:tls';
import { buildConnector } from 'undici';
import type { Schema } from './config.js';

export interface OriginTlsConfig {
  originCaFiles: Record<string, string>;
  originInsecureHosts: string[];
}

export const originTlsSchema: Schema = {
  originCaFiles: {
    type: 'labels',
    default: {},
    env: 'DAMSELFLY_ORIGIN_CA_FILES',
    doc: 'PEM CA bundles for origins with their own CA: host[:port]=/path/ca.pem,... (added to the public CAs)',
  },
  originInsecureHosts: {
    type: 'strings',
    default: [],
    env: 'DAMSELFLY_ORIGIN_INSECURE_HOSTS',
    doc: 'origins (host[:port]) whose TLS certificate is NOT checked: anyone on the path can serve them; avoid',
  },
};

/** Node's codes for a certificate it could not verify (as opposed to a refused or dropped connection). */
const CERT_ERRORS = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** True when `err` (or its cause) is a failed certificate check. */
export function isCertificateError(err: unknown): boolean {
  for (let e = err as { code?: string; cause?: unknown } | undefined, i = 0; e && i < 4; e = e.cause as typeof e, i++) {
    if (e.code && CERT_ERRORS.has(e.code)) return true;
  }
  return false;
}

export class OriginTls {
  readonly #ca = new Map<string, Buffer>();
  readonly #insecure: Set<string>;

  /** Reads every CA file now: a missing or unreadable one is a config error reported with the others. */
  constructor(cfg: OriginTlsConfig, errors: string[] = []) {
    for (const [host, file] of Object.entries(cfg.originCaFiles)) {
      try {
        const pem = readFileSync(file);
        if (!pem.includes('-----BEGIN CERTIFICATE-----')) errors.push(`originCaFiles: ${file} (for ${host}) holds no PEM certificate`);
        else this.#ca.set(host.toLowerCase(), pem);
      } catch (err) {
        errors.push(`originCaFiles: cannot read ${file} (for ${host}): ${(err as Error).message}`);
      }
    }
    this.#insecure = new Set(cfg.originInsecureHosts.map((h) => h.toLowerCase()));
  }

  /** Hosts whose certificates are not checked (for the start-up warning). */
  get insecureHosts(): string[] {
    return [...this.#insecure];
  }

  /** Extra TLS options for a connection to `hostname:port`, if any were configured for it. */
  optionsFor(hostname: string, port: number | string): ConnectionOptions | undefined {
    const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
    const keys = [`${host}:${port}`, host];
    if (keys.some((k) => this.#insecure.has(k))) return { rejectUnauthorized: false };
    for (const k of keys) {
      const ca = this.#ca.get(k);
      // The configured CA is added to Node's public roots, not put in their place: a registry that later moves to a
      // public certificate keeps working.
      if (ca) return { ca: [...rootCertificates, ca.toString()] };
    }
    return undefined;
  }

  get empty(): boolean {
    return this.#ca.size === 0 && this.#insecure.size === 0;
  }

  /**
   * Wraps a connector factory so each connection gets its origin's TLS options: `make(extra)` builds a connector with
   * those options added (the supernode's address guard, or undici's plain one); one is built per distinct setting.
   */
  connector(make: (extra: buildConnector.BuildOptions) => buildConnector.connector): buildConnector.connector {
    const plain = make({});
    const byKey = new Map<string, buildConnector.connector>();
    return (options, callback) => {
      const port = options.port || (options.protocol === 'https:' ? 443 : 80);
      const extra = options.protocol === 'https:' ? this.optionsFor(options.hostname, port) : undefined;
      if (!extra) return plain(options, callback);
      const key = `${options.hostname}:${port}`;
      let c = byKey.get(key);
      if (!c) byKey.set(key, (c = make(extra as buildConnector.BuildOptions)));
      return c(options, callback);
    };
  }
}
