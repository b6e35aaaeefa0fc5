/**
 * The trust settings every long-running component shares: the cluster secret, the explicit insecure opt-out, and TLS
 * files. Read and checked once at start-up with the rest of the config, every problem reported together.
 */
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Schema } from './config.js';
import { MIN_SECRET_LENGTH } from './cluster-auth.js';

export interface TrustConfig {
  clusterSecret: string | undefined;
  clusterSecretFile: string | undefined;
  insecure: boolean;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  tlsCa: string | undefined;
  tlsClientAuth: boolean;
}

/** Settings every daemon has besides trust: how long a stop may take, and the largest object it will take on. */
export const commonSchema: Schema = {
  shutdownGraceSeconds: { type: 'int', default: 10, min: 1, max: 3600, env: 'DAMSELFLY_SHUTDOWN_GRACE_SECONDS', doc: 'on SIGTERM, exit within this many seconds' },
  maxBlobSize: { type: 'size', default: 256 * 1024 ** 3, min: 0, env: 'DAMSELFLY_MAX_BLOB_SIZE', doc: 'largest origin object accepted, e.g. 256GiB' },
};

export interface CommonConfig {
  shutdownGraceSeconds: number;
  maxBlobSize: number;
}

export const trustSchema: Schema = {
  clusterSecret: {
    type: 'string',
    env: 'DAMSELFLY_CLUSTER_SECRET',
    noFlag: true,
    doc: `shared cluster secret (≥ ${MIN_SECRET_LENGTH} characters); prefer clusterSecretFile. Not a flag: a command line is visible to every local user`,
  },
  clusterSecretFile: { type: 'string', env: 'DAMSELFLY_CLUSTER_SECRET_FILE', doc: 'file holding the cluster secret; refused if every local user may read it (0600 or 0440)' },
  insecure: { type: 'bool', default: false, env: 'DAMSELFLY_INSECURE', doc: 'allow non-loopback listening without a cluster secret (no authentication at all)' },
  tlsCert: { type: 'string', env: 'DAMSELFLY_TLS_CERT', doc: 'PEM certificate: serve TLS (and present it as client certificate)' },
  tlsKey: { type: 'string', env: 'DAMSELFLY_TLS_KEY', doc: 'PEM private key for tlsCert; refused if every local user may read it' },
  tlsCa: { type: 'string', env: 'DAMSELFLY_TLS_CA', doc: 'PEM CA bundle that signs the cluster certificates' },
  tlsClientAuth: { type: 'bool', default: false, env: 'DAMSELFLY_TLS_CLIENT_AUTH', doc: 'require client certificates signed by tlsCa (mutual TLS)' },
};

export interface TlsMaterial {
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
  clientAuth: boolean;
}

/** What the trust settings resolve to at run time. Never logged: it holds the secret. */
export interface Trust {
  secret: Buffer | undefined;
  tls: TlsMaterial | undefined;
  insecure: boolean;
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h === '::1';
}

/**
 * Reads a file named in the trust settings. A `secret` one (the cluster secret, a TLS key) every local user may read
 * is refused, as ssh refuses such a private key: whoever reads it is a cluster member, who may read every cached blob
 * and have the supernode fetch for them. Its owner and group may read it (the chart mounts it 0440 for the pod's
 * fsGroup).
 */
function readOrReport(path: string, what: string, errors: string[], secret = false): Buffer | undefined {
  let fd: number | undefined;
  try {
    // One open for the check and the read: the mode checked is the file read.
    fd = openSync(path, 'r');
    const mode = fstatSync(fd).mode;
    if (secret && mode & 0o004) {
      errors.push(`${what}: ${JSON.stringify(path)} is readable by every local user (mode ${(mode & 0o777).toString(8).padStart(4, '0')}), and whoever reads it joins the cluster: make it 0600 or 0440 (chmod o-r)`);
      return undefined;
    }
    return readFileSync(fd);
  } catch (err) {
    errors.push(`${what}: cannot read ${JSON.stringify(path)} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Resolves the secret and TLS files, appending every problem to `errors`. `listen` names the non-health listen
 * addresses (setting name → host): without a secret, a non-loopback one is refused unless `insecure` is set.
 */
export function resolveTrust(c: TrustConfig, listen: Record<string, string>, errors: string[]): Trust {
  let secret: Buffer | undefined;
  if (c.clusterSecret?.trim() && c.clusterSecretFile) errors.push('clusterSecret and clusterSecretFile: set one, not both');
  // An empty value (e.g. an unset variable in a template) means "not set", not "a short secret".
  const raw = c.clusterSecretFile ? readOrReport(c.clusterSecretFile, 'clusterSecretFile', errors, true)?.toString().trim() : c.clusterSecret?.trim() || undefined;
  if (raw !== undefined) {
    if (raw.length < MIN_SECRET_LENGTH) errors.push(`cluster secret: must be at least ${MIN_SECRET_LENGTH} characters, got ${raw.length}`);
    else secret = Buffer.from(raw);
  }
  // A secret file given but refused was reported above: its want of a secret is not a second error.
  if (!secret && !c.insecure && raw === undefined && !c.clusterSecretFile) {
    for (const [name, host] of Object.entries(listen)) {
      if (!isLoopbackHost(host)) {
        errors.push(`${name}: ${JSON.stringify(host)} is reachable from other hosts, but no cluster secret is set: set clusterSecretFile (or DAMSELFLY_CLUSTER_SECRET), listen on 127.0.0.1, or set insecure: true to run without authentication`);
      }
    }
  }
  let tls: TlsMaterial | undefined;
  if (c.tlsCert || c.tlsKey || c.tlsCa || c.tlsClientAuth) {
    if (!!c.tlsCert !== !!c.tlsKey) errors.push('tlsCert and tlsKey: set both or neither');
    if (c.tlsClientAuth && !c.tlsCa) errors.push('tlsClientAuth: needs tlsCa (the CA client certificates must chain to)');
    tls = {
      cert: c.tlsCert ? readOrReport(c.tlsCert, 'tlsCert', errors) : undefined,
      key: c.tlsKey ? readOrReport(c.tlsKey, 'tlsKey', errors, true) : undefined,
      ca: c.tlsCa ? readOrReport(c.tlsCa, 'tlsCa', errors) : undefined,
      clientAuth: c.tlsClientAuth,
    };
  }
  return { secret, tls, insecure: c.insecure };
}

/** Options for `https.createServer` / fastify's `https`, or undefined for plain HTTP. */
export function tlsServerOptions(tls: TlsMaterial | undefined): { cert: Buffer; key: Buffer; ca?: Buffer; requestCert: boolean; rejectUnauthorized: boolean } | undefined {
  if (!tls?.cert || !tls.key) return undefined;
  return { cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: tls.clientAuth, rejectUnauthorized: tls.clientAuth };
}

/** Options for outgoing TLS connections to other cluster members (CA to trust, client certificate to present). */
export function tlsClientOptions(tls: TlsMaterial | undefined): { ca?: Buffer; cert?: Buffer; key?: Buffer } {
  if (!tls) return {};
  return { ca: tls.ca, cert: tls.cert, key: tls.key };
}

/**
 * TLS options for connections to other cluster members: trust the cluster CA, present this member's certificate.
 * A member is whoever holds a certificate the cluster CA signed; host names are not part of that identity (peers
 * advertise node IPs a shared certificate cannot list), so only the chain is checked when a cluster CA is set.
 */
export function clusterTls(trust: Trust | undefined): { ca?: Buffer; cert?: Buffer; key?: Buffer; checkServerIdentity?: () => undefined } {
  const opts = tlsClientOptions(trust?.tls);
  return opts.ca ? { ...opts, checkServerIdentity: () => undefined } : opts;
}
