/**
 * The trust settings every long-running component shares: the cluster secret, the explicit insecure opt-out, and TLS
 * files. Read and checked once at start-up with the rest of the config, every problem reported together.
 */
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { Schema } from './config.js';
import { MIN_SECRET_LENGTH } from './cluster-auth.js';
import { ownedHere } from './file-owner.js';

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
  clusterSecretFile: { type: 'string', env: 'DAMSELFLY_CLUSTER_SECRET_FILE', doc: 'file holding the cluster secret, mode 0600 or 0440 (refused if others may read it, or others or a group not this user\'s own may change it); a pipe is read to its end' },
  insecure: { type: 'bool', default: false, env: 'DAMSELFLY_INSECURE', doc: 'allow non-loopback listening without a cluster secret (no authentication at all)' },
  tlsCert: { type: 'string', env: 'DAMSELFLY_TLS_CERT', doc: 'PEM certificate: serve TLS (and present it as client certificate)' },
  tlsKey: { type: 'string', env: 'DAMSELFLY_TLS_KEY', doc: 'PEM private key for tlsCert (held to the rules of clusterSecretFile)' },
  tlsCa: { type: 'string', env: 'DAMSELFLY_TLS_CA', doc: "PEM CA bundle that signs the cluster certificates: this user's or root's, and not writable by others or a group not this user's own" },
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
 * What a file named in the trust settings is to the cluster. `public`: a certificate (a wrong one only fails TLS).
 * `anchor`: the cluster CA, whoever may change it may add their own CA and be a member. `secret`: the cluster secret
 * or a TLS key, whoever may read it is a member, who may read every cached blob and have the supernode fetch for them.
 */
type TrustFile = 'public' | 'anchor' | 'secret';

const octal = (mode: number) => (mode & 0o777).toString(8).padStart(4, '0');

/**
 * Reads a file named in the trust settings, refusing one whose mode or owner gives it away, as ssh refuses such a
 * private key. An `anchor` or a `secret` must be writable by its owner alone (or by its group when that is this
 * user's own group, as a umask of 002 leaves files under user private groups); an `anchor` must be this user's or
 * root's; a `secret` readable by its owner and group only (the chart mounts it 0440 for the pod's fsGroup). A secret's
 * owner is not checked: whoever owns it may read it, and is a member already. A pipe (`--cluster-secret-file <(…)`)
 * is read to its end; anything else but a regular file is refused.
 */
function readOrReport(path: string, what: string, errors: string[], kind: TrustFile = 'public'): Buffer | undefined {
  const named = `${what}: ${JSON.stringify(path)}`;
  let fd: number | undefined;
  try {
    // One open for the checks and the read: what is checked is the file read. Non-blocking, so that a FIFO opens at
    // once to be looked at (an open for reading would wait for a writer).
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const st = fstatSync(fd);
    const problems: string[] = [];
    if (!st.isFile() && !st.isFIFO()) problems.push(`${named} is neither a regular file nor a pipe`);
    else if (kind !== 'public') {
      const myGroup = process.getegid?.() ?? st.gid;
      if (kind === 'anchor' && !ownedHere(st.uid)) problems.push(`${named} is owned by uid ${st.uid}, neither this user (uid ${process.geteuid?.()}) nor root, and its owner may add their own CA: chown it`);
      const writers = st.mode & 0o002 ? 'every local user' : st.mode & 0o020 && st.gid !== myGroup ? `its group (gid ${st.gid})` : undefined;
      if (writers) problems.push(`${named} may be changed by ${writers} (mode ${octal(st.mode)}), and whoever changes it ${kind === 'secret' ? 'chooses the secret this node trusts' : 'may add their own CA'}: chmod go-w`);
      if (kind === 'secret' && st.mode & 0o004) problems.push(`${named} is readable by every local user (mode ${octal(st.mode)}), and whoever reads it joins the cluster: make it 0600 or 0440 (chmod o-r)`);
    }
    if (problems.length) {
      errors.push(...problems);
      return undefined;
    }
    // A pipe is read to its end through a blocking descriptor of its own (its writer may not have written yet).
    return st.isFIFO() ? readFileSync(path) : readFileSync(fd);
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
  const raw = c.clusterSecretFile ? readOrReport(c.clusterSecretFile, 'clusterSecretFile', errors, 'secret')?.toString().trim() : c.clusterSecret?.trim() || undefined;
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
      key: c.tlsKey ? readOrReport(c.tlsKey, 'tlsKey', errors, 'secret') : undefined,
      ca: c.tlsCa ? readOrReport(c.tlsCa, 'tlsCa', errors, 'anchor') : undefined,
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
